// A pool of dedicated workers running one JS plug-in, shared by both hosts: Deno on the server
// (deno_host.mjs) and the browser's runtime worker. A worker answers one request at a time,
// because the Web Worker format has no request ids; the pool gives concurrency. A worker that
// throws or ends itself is replaced (the request fails as crashed: 502); a cancelled request (the runtime's
// timeout) terminates its worker, so an endless loop never wedges the pool.

export class PluginCrashed extends Error {
  crashed = true;
}

export class WorkerPool {
  #createWorker;
  #slots = [];
  #queue = [];

  /** createWorker() returns a new Worker running boot.mjs for the plug-in. */
  constructor(createWorker, size = 2) {
    this.#createWorker = createWorker;
    this.size = Math.max(1, size | 0);
  }

  /** Start the workers; rejects with the plug-in's load error. */
  async start() {
    for (let i = 0; i < this.size; i++) this.#slots.push(this.#spawn());
    await Promise.all(this.#slots.map((slot) => slot.ready));
  }

  /** Send a wire request {url, method, headers, body}; resolves to {status, headers, body}. */
  request(id, request) {
    return new Promise((resolve, reject) => {
      this.#queue.push({ id, request, resolve, reject });
      this.#dispatch();
    });
  }

  /** Like request(), but never rejects: resolves to the answer or to {error, crashed}. */
  answer(id, request) {
    return this.request(id, request).catch((error) => ({
      error: String(error?.message || error),
      crashed: Boolean(error?.crashed),
    }));
  }

  /** Give up on request `id`: drop it from the queue, or terminate the worker running it. */
  cancel(id) {
    const queued = this.#queue.findIndex((job) => job.id === id);
    if (queued >= 0) {
      this.#queue.splice(queued, 1)[0].reject(new Error("cancelled"));
      return;
    }
    const slot = this.#slots.find((s) => s.job?.id === id);
    if (slot) this.#replace(slot, new Error("cancelled: the worker was terminated"));
  }

  close() {
    for (const slot of this.#slots) slot.worker.terminate();
    this.#slots = [];
  }

  #spawn() {
    const worker = this.#createWorker();
    const slot = { worker, job: null, booted: false };
    slot.ready = new Promise((resolve, reject) => {
      worker.onmessage = (event) => {
        const data = event.data;
        if (!slot.booted) {
          if (data?.__valor === "ready") {
            slot.booted = true;
            resolve();
            this.#dispatch();
          } else if (data?.__valor === "error") {
            reject(new Error(data.error));
          } else if (data?.__valor === "closed") {
            reject(new Error("the worker ended itself (self.close()) while loading"));
          }
          return;
        }
        if (data?.__valor === "closed") {
          this.#replace(slot, new PluginCrashed("the worker ended itself (self.close())"));
          return;
        }
        const job = slot.job;
        if (!job) return; // a message nobody asked for
        slot.job = null;
        try {
          job.resolve(toWire(data));
        } catch (error) {
          job.reject(error);
        }
        this.#dispatch();
      };
      const fail = (event) => {
        event.preventDefault?.();
        const message = event.message || "the worker failed";
        if (!slot.booted) reject(new Error(message));
        else this.#replace(slot, new PluginCrashed(message));
      };
      worker.onerror = fail;
      worker.onmessageerror = fail;
    });
    slot.ready.catch(() => {}); // a boot failure is reported by start(), or by the next request
    return slot;
  }

  #replace(slot, error) {
    const job = slot.job;
    slot.worker.terminate();
    const index = this.#slots.indexOf(slot);
    if (index >= 0) {
      const fresh = this.#spawn();
      this.#slots[index] = fresh;
      fresh.ready.catch((bootError) => this.#failAll(bootError));
    }
    job?.reject(error);
  }

  #failAll(error) {
    for (const job of this.#queue.splice(0)) job.reject(new PluginCrashed(error.message));
  }

  #dispatch() {
    for (const slot of this.#slots) {
      if (!this.#queue.length) return;
      if (!slot.booted || slot.job) continue;
      const job = (slot.job = this.#queue.shift());
      const { url, method, headers, body } = job.request;
      // An ArrayBuffer, as the original Valor's worker format hands it (a copy, transferred).
      const copy = body ? new Uint8Array(body).buffer : null;
      slot.worker.postMessage({ url, method, headers, body: copy }, copy ? [copy] : []);
    }
  }
}

const encoder = new TextEncoder();

/** A worker's answer as {status, headers: [[name, value]], body: Uint8Array}. */
export function toWire(data) {
  if (data === null || typeof data !== "object") {
    throw new Error(`the worker answered ${data === null ? "null" : typeof data}, expected {status, headers, body}`);
  }
  const status = data.status ?? 200;
  let headers = data.headers ?? [];
  if (typeof Headers !== "undefined" && headers instanceof Headers) headers = [...headers];
  else if (!Array.isArray(headers)) headers = Object.entries(headers);
  headers = headers.map(([name, value]) => [String(name), String(value)]);
  let body = data.body;
  if (body === null || body === undefined) body = new Uint8Array(0);
  else if (typeof body === "string") body = encoder.encode(body);
  else if (body instanceof ArrayBuffer) body = new Uint8Array(body);
  else if (ArrayBuffer.isView(body)) body = new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  else {
    body = encoder.encode(JSON.stringify(body));
    if (!headers.some(([name]) => name.toLowerCase() === "content-type")) {
      headers.push(["content-type", "application/json"]);
    }
  }
  return { status, headers, body };
}
