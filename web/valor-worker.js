// The runtime worker (a module worker, one per tab): boots Pyodide, installs the Valor runtime
// from the bundle and answers requests that the service worker sends over a MessagePort.
//
// Messages from the page:   {type: "boot", base, manifest, version}  start the runtime
//                           {type: "port"} + ports[0]               the service worker's channel
//                           {type: "ping"}                          are you responsive?
// Messages to the page:     {type: "status", status, ...}          booting | ready | error
//                           {type: "loaded", plugins, failures, ...} every plug-in loaded or failed
//                           {type: "snapshot", kept, error}       one made in this browser is kept
//                           {type: "pong"}
//                           {type: "prefixes", prefixes}           after /_plugins changed mounts
//                           {type: "error", error}                 {message, error_id, traceback}
// On the port, from the SW: {type: "request", id, url, method, headers, body}  headers: CRLF lines
//                           {type: "pull", id} | {type: "cancel", id}  a streamed answer's next part
// On the port, to the SW:   {type: "response", id, status, reason, headers, body}  (transferred)
//                           {type: "response", ..., body: null, stream: true}  then, per pull:
//                           {type: "part", id, body} | {type: "end", id} | {type: "error", id, detail}
//                           {type: "status", status}
//                           {type: "prefixes", prefixes}           after /_plugins changed mounts

let host = null; // the Python BrowserHost, once booted
let handle = null; // host.handle, looked up once: each lookup makes a new proxy
let pullPart = null; // host.pull and host.cancel, for streamed answers
let cancelStream = null;
const streams = new Map(); // port -> Map(request id -> the runtime's stream id)
let status = "booting";
let port = null; // the current service worker's end of this tab's channel
const ports = []; // the latest ports, the current one last
const KEEP_PORTS = 4;
const waiting = []; // requests that arrived while booting: [port, message]
let bootFailure = null; // why the boot failed: every request is answered 503 with it at once

// Handlers first, before any await: a module worker drops messages that find no handler.
self.onmessage = (event) => {
  const message = event.data;
  if (message.type === "port") adopt(event.ports[0]);
  else if (message.type === "boot") boot(message);
  else if (message.type === "ping") self.postMessage({ type: "pong" });
};

function adopt(newPort) {
  // A new port means the service worker restarted or was updated. Older ports stay open a
  // while, for answers to requests that came on them; the oldest are closed.
  ports.push(newPort);
  while (ports.length > KEEP_PORTS) ports.shift().close();
  port = newPort;
  port.onmessage = (event) => receive(newPort, event.data);
  newPort.postMessage({ type: "status", status });
}

function receive(from, message) {
  if (message.type === "pull") return pull(from, message.id);
  if (message.type === "cancel") return cancel(from, message.id);
  if (message.type !== "request") return;
  if (handle) answer(from, message);
  else if (bootFailure) from.postMessage(failure(message.id, 503, bootFailure));
  else waiting.push([from, message]);
}

async function answer(to, { id, url, method, headers, body }) {
  let reply;
  try {
    // Most answers come back at once; a plug-in that waits returns a promise (a PyProxy).
    let result = handle(url, method, headers, body);
    if (typeof result.then === "function") {
      const later = result;
      result = await later;
      later.destroy();
    }
    const [status, reason, pairs, bytes, stream] = result;
    reply = { type: "response", id, status, reason, headers: pairs, body: bytes };
    if (stream !== undefined) {
      // Streamed: the service worker pulls each part as the page reads (one credit per pull).
      if (!streams.has(to)) streams.set(to, new Map());
      streams.get(to).set(id, stream);
      reply.stream = true;
    }
  } catch (error) {
    // The runtime answers every failure itself; this is a bug in the host, not a plug-in.
    console.error("valor: the runtime failed to answer", error);
    reply = failure(id, 500, `the browser runtime failed: ${error}`);
  }
  to.postMessage(reply, reply.body ? [reply.body.buffer] : []);
}

async function pull(to, id) {
  const stream = streams.get(to)?.get(id);
  if (stream === undefined) return to.postMessage({ type: "end", id });
  try {
    const later = pullPart(stream);
    const part = await later;
    later.destroy();
    if (part === undefined) {
      streams.get(to).delete(id);
      to.postMessage({ type: "end", id });
    } else {
      to.postMessage({ type: "part", id, body: part }, [part.buffer]);
    }
  } catch (error) {
    // Logged by the runtime under an error id, which the message names.
    streams.get(to)?.delete(id);
    const detail = String(error?.message ?? error).trim().split("\n").pop();
    to.postMessage({ type: "error", id, detail });
  }
}

function cancel(to, id) {
  const stream = streams.get(to)?.get(id);
  if (stream === undefined) return;
  streams.get(to).delete(id);
  cancelStream(stream)?.destroy?.();
}

function failure(id, status, detail) {
  // The same JSON error body as the runtime's: {status, error, detail}.
  const reason = { 500: "Internal Server Error", 503: "Service Unavailable" }[status];
  const body = new TextEncoder().encode(JSON.stringify({ status, error: reason, detail }));
  return { type: "response", id, status, reason, headers: [["content-type", "application/json"]], body };
}

function setStatus(next, extra = {}) {
  status = next;
  self.postMessage({ type: "status", status, ...extra });
  port?.postMessage({ type: "status", status });
}

async function boot({ base, manifest, version }) {
  const bundle = buildFiles(base, version);
  const started = performance.now();
  const steps = {};
  const warnings = [];
  const step = async (name, work) => {
    const t = performance.now();
    const result = await work();
    steps[name] = Math.round(performance.now() - t);
    return result;
  };
  try {
    // Pyodide first: its start is the longest chain (its module, then its wasm, standard library
    // and lock file), and none of it waits for the bundle's list.
    const pyodideModule = import(`${base}pyodide/pyodide.mjs`);
    pyodideModule.catch(() => {}); // reported when used
    // The script pyodide.mjs imports first thing (the same URL, so one fetch): asked for now.
    import(`${base}pyodide/pyodide.asm.mjs`).catch(() => {});
    const info = JSON.parse(new TextDecoder().decode(await step("bundle", () => bundle.read("valor-bundle.json"))));
    // Then everything else at once: the snapshot, the runtime wheel, the plug-ins' files. The
    // snapshot is the bundle's, or for a bundle built without Node one this browser made after
    // an earlier boot (kept with the build's files).
    const kept = keptSnapshot(bundle);
    const made = info.snapshot ? null : info.snapshot_in_browser ? await kept.find() : null;
    const source = info.snapshot ?? (made && { path: "the one made in this browser", key: kept.key });
    const snapshot = info.snapshot ? bundle.read(info.snapshot.path) : made && Promise.resolve(made);
    snapshot?.catch(() => {});
    // A missing wheel or file archive is fatal, with or without a snapshot.
    const fatal = (error) => {
      throw Object.assign(error, { fatal: true });
    };
    const wheel = bundle.read(info.runtime_wheel).catch(fatal);
    wheel.catch(() => {});
    const files = step("files", () => bundle.read(info.files_archive)).catch(fatal);
    files.catch(() => {});
    // The requirements, laid out as installed: written beside the runtime, no installer.
    const requirements = info.requirements_archive
      ? step("requirements", () => bundle.read(info.requirements_archive)).catch(fatal)
      : null;
    requirements?.catch(() => {});
    const { loadPyodide } = await pyodideModule;
    const indexURL = `${base}pyodide/`;
    // The snapshot holds imported modules, not their files: the wheel's files go on the file
    // system for what is read later (tracebacks' source lines, lazy imports), the plug-ins'
    // files under /valor, where the bundle's manifest names them. Pyodide calls fsInit while
    // it sets up its file system (it says where site-packages is) and goes on if it fails:
    // the failure is thrown once Pyodide has loaded.
    let unpacked = null;
    const fsInit = (FS, { sitePackages }) => {
      unpacked = (async () => {
        unzip(await wheel, sitePackages, FS);
        if (requirements) unzip(await requirements, sitePackages, FS);
        unzip(await files, "/valor", FS);
      })();
      return unpacked.catch(() => {});
    };
    let pyodide = null;
    if (snapshot) {
      try {
        pyodide = await step("pyodide", async () => {
          const booted = await bundle.serving(`${base}pyodide/`, () =>
            loadPyodide({ indexURL, fsInit, _loadSnapshot: snapshot.then(inflateSnapshot) }),
          );
          await unpacked;
          booted.pyimport("valor.snapshot").restore(source.key, navigator.language ?? "");
          return booted;
        });
      } catch (error) {
        if (error.fatal) throw error;
        // Made for another Pyodide or build, or damaged: boot as without one.
        const warning = `the memory snapshot ${source.path} was skipped (${summary(error)}): booted without it`;
        console.warn(`valor: ${warning}`);
        warnings.push(warning);
        if (made) await kept.drop(); // made again below
      }
    } else if (info.snapshot_in_browser) {
      warnings.push("this bundle has no memory snapshot (built without Node): booted without it; this browser makes one for its next boots");
    } else {
      warnings.push("this bundle has no memory snapshot (built with --no-snapshot): booted without it");
    }
    if (!pyodide) {
      pyodide = await step("pyodide", () => bundle.serving(`${base}pyodide/`, () => loadPyodide({ indexURL, fsInit })));
      await unpacked;
    }
    const browser = pyodide.pyimport("valor.browser");
    // The service worker hears of new prefixes on the port, before the /_plugins answer that
    // caused them, so a request to a new plug-in right after it is intercepted.
    const onChange = (prefixes) => {
      port?.postMessage({ type: "prefixes", prefixes });
      self.postMessage({ type: "prefixes", prefixes });
    };
    // The runtime answers at once; a request to a plug-in still loading waits for it.
    const loading = performance.now();
    host = await browser.start(`/valor/${manifest}`, base.replace(/\/$/, ""), onChange);
    // Errors logged under an error id (a plug-in's, after its answer too): Valor.detail.errors.
    host.report_errors((error) => self.postMessage({ type: "error", error: JSON.parse(error) }));
    const state = host.describe().toJs({ dict_converter: Object.fromEntries });
    handle = host.handle;
    pullPart = host.pull;
    cancelStream = host.cancel;
    const fromSnapshot = Boolean(snapshot) && warnings.length === 0;
    const bootMs = Math.round(performance.now() - started);
    setStatus("ready", { ...state, bootMs, steps, snapshot: fromSnapshot, warnings });
    for (const [from, message] of waiting.splice(0)) answer(from, message);
    const later = host.loaded();
    const loaded = (await later).toJs({ dict_converter: Object.fromEntries });
    later.destroy();
    steps.plugins = Math.round(performance.now() - loading);
    self.postMessage({ type: "loaded", ...loaded, steps });
    if (info.snapshot_in_browser && !fromSnapshot) kept.make(info.runtime_wheel);
  } catch (error) {
    console.error("valor: the runtime failed to boot", error);
    bootFailure = `the browser runtime failed to boot: ${error?.message ?? error}`;
    setStatus("error", { error: String(error?.message ?? error), warnings });
    for (const [from, { id }] of waiting.splice(0)) from.postMessage(failure(id, 503, bootFailure));
  }
}

function summary(error) {
  // A Python error's last line names it; a JavaScript error's first line does.
  const lines = String(error?.message ?? error).trim().split("\n");
  return lines[0].startsWith("Traceback") ? lines.at(-1) : lines[0];
}

function unzip(archive, folder, FS) {
  // The build stores the runtime wheel and plugins.zip uncompressed, so writing their files
  // from here is a copy each: a few ms, where Python's zipfile took tens on a fresh boot.
  const view = new DataView(archive.buffer, archive.byteOffset, archive.byteLength);
  let end = archive.length - 22; // the end of central directory record, after any comment
  while (end >= 0 && view.getUint32(end, true) !== 0x06054b50) end--;
  if (end < 0) throw new Error("not a zip archive");
  const names = new TextDecoder();
  let entry = view.getUint32(end + 16, true);
  for (let count = view.getUint16(end + 10, true); count > 0; count--) {
    const method = view.getUint16(entry + 10, true);
    const size = view.getUint32(entry + 20, true);
    const nameLength = view.getUint16(entry + 28, true);
    const local = view.getUint32(entry + 42, true);
    const name = names.decode(archive.subarray(entry + 46, entry + 46 + nameLength));
    entry += 46 + nameLength + view.getUint16(entry + 30, true) + view.getUint16(entry + 32, true);
    if (name.endsWith("/")) continue;
    if (method !== 0) throw new Error(`${name} is compressed in its archive (the build stores them)`);
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const path = `${folder}/${name}`;
    FS.mkdirTree(path.slice(0, path.lastIndexOf("/")));
    FS.writeFile(path, archive.subarray(start, start + size));
  }
}

function buildFiles(base, version) {
  // This build's files, read straight from the service worker's cache of them (valor-sw.js
  // names it): several times faster than through the service worker (16 MB: 30 ms instead of
  // 90 here). Fetched when not there yet (a first visit), with `?v=VERSION`, which the service
  // worker answers from that build's cache, so one boot never mixes files of two builds.
  const cacheName = `valor-files:${base}:${version}`;
  const match = (pathname) => caches.match(pathname, { cacheName });
  return {
    base,
    version,
    cacheName,
    async cached(path) {
      // The file's bytes from the cache, or null.
      const response = await match(`${base}${path}`);
      return response ? bytesOf(response) : null;
    },
    async read(path) {
      const cached = await this.cached(path);
      if (cached) return cached;
      const url = `${base}${path}?v=${version}`;
      const response = await fetch(url, { cache: "no-cache" });
      if (!response.ok) throw new Error(`${url} answered ${response.status}`);
      return bytesOf(response);
    },
    async serving(prefix, work) {
      // Pyodide fetches its wasm, standard library and lock file itself: while `work` runs,
      // this worker's fetch() answers those under `prefix` from the cache directly as well.
      const fetchFromNetwork = self.fetch;
      self.fetch = async (resource, options) => {
        const url = new URL(resource instanceof Request ? resource.url : String(resource), location.href);
        const cached = url.pathname.startsWith(prefix) && (await match(url.pathname));
        return cached || fetchFromNetwork(resource, options);
      };
      try {
        return await work();
      } finally {
        self.fetch = fetchFromNetwork;
      }
    },
  };
}

async function bytesOf(response) {
  return new Uint8Array(await (await response.blob()).arrayBuffer());
}

function keptSnapshot(bundle) {
  // A snapshot this browser made, kept with this build's files, so a new build's activation
  // deletes it with the rest.
  const { base, version, cacheName } = bundle;
  const name = "__valor_snapshot__";
  const url = new URL(`${base}${name}`, location.origin).href;
  const key = `browser:${version}`;
  return {
    key,
    find: () => bundle.cached(name),
    async drop() {
      await (await caches.open(cacheName)).delete(url);
    },
    make(runtimeWheel) {
      // In a worker of its own, after this runtime is ready: see valor-snapshot.js.
      const maker = new Worker(`${base}valor-snapshot.js?v=${version}`, { type: "module" });
      maker.onmessage = ({ data }) => {
        maker.terminate();
        if (data.type === "failed") console.warn(`valor: making the memory snapshot failed: ${data.error}`);
        self.postMessage({ type: "snapshot", kept: data.type === "kept", error: data.error });
      };
      maker.postMessage({ base, version, key, runtimeWheel, cacheName, url });
    },
  };
}

function inflateSnapshot(packed) {
  // The bundle stores the heap without its pages of zeros (valor/snapshot.py says the layout).
  const view = new DataView(packed.buffer, packed.byteOffset, packed.byteLength);
  const magic = new TextDecoder().decode(packed.subarray(0, 8));
  if (magic !== "VALORSN1") throw new Error("not a packed memory snapshot");
  const [size, page, count] = [8, 12, 16].map((at) => view.getUint32(at, true));
  const heap = new Uint8Array(size); // zeros
  let from = 20 + count;
  for (let index = 0; index < count; index++) {
    if (!packed[20 + index]) continue;
    const start = index * page;
    const length = Math.min(page, size - start);
    heap.set(packed.subarray(from, from + length), start);
    from += length;
  }
  if (from !== packed.length) throw new Error("the packed memory snapshot is damaged");
  return heap;
}
