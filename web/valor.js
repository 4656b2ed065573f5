// Valor in a page: `await Valor.start({manifest})` registers the service worker, starts this
// tab's runtime worker, connects the two with a MessageChannel and resolves once requests to
// the plug-ins are intercepted and answered. Plug-ins load side by side: a request to one
// still loading waits for it, and `await Valor.loaded()` gives the final list and failures.
// Status events: "booting", "ready", "error" (and "status" for all of them, with the details
// in `event.detail`); "loaded" once every plug-in has loaded or failed (then "status" again);
// "prefixes" after /_plugins changes; "logged" for each error the runtime logs under an error
// id (a plug-in's, after its answer too), which `Valor.detail.errors` keeps (the last ones).
// The messages it exchanges with both workers: valor/protocol.py, written in by the build.
// `start({shared: name})` runs the runtime in a shared worker of that name, which the origin's
// pages that ask for the same name join (booted once); `reset()` gives it a fresh runtime
// (valor_page does both, between tests: see docs/testing.md).

const BUILD = /*__VALOR_BUILD__*/null;
const PROTOCOL = /*__VALOR_PROTOCOL__*/null;
if (!BUILD || !PROTOCOL) throw new Error("valor.js is the unbuilt source: serve the output of valor build");
const TYPE = PROTOCOL.types;
export const VERSION = BUILD.version;
const ACK_TIMEOUT = 30000; // ms for the service worker to acknowledge a message (a busy device)
const CONTROL_TIMEOUT = 60000; // ms for a new service worker to take control (15 s was short on a busy machine)
const WATCH_INTERVAL = 1000; // ms between pings of a ready runtime worker
const NUDGE_INTERVAL = 500; // ms between reminders to a waiting service worker
const BOOT_TIMEOUT = 120000; // ms for a runtime to boot, and then for its plug-ins to load
const MAX_ERRORS = 20; // errors kept in Valor.detail.errors, newest last
// Where this file is served from: the bundle's base, wherever the page itself is.
const SERVED_BASE = new URL(".", import.meta.url).pathname;

class ValorRuntime extends EventTarget {
  status = "idle";
  detail = {};
  prefixes = null;
  #options = null;
  #worker = null;
  #started = null;
  #acks = new Map();
  #lastPong = 0;
  #watchdog = null;
  #nonce = 0;
  #epoch = null; // the service worker instance this tab last sent a port to on request
  #sentPrefixes = null; // JSON of the prefixes the service worker was last given on connecting
  #resets = new Map(); // stage -> resolve: a reset's stage under way

  /** Resolves with the state once every plug-in has loaded or failed to (after `start`);
   * rejects with the reason once the runtime has failed, or has not loaded within the boot
   * timeout. */
  loaded() {
    if (this.status === "ready" && this.detail.loading === false) return Promise.resolve(this.detail);
    if (this.status === "error") return Promise.reject(new Error(this.detail.error));
    return new Promise((resolve, reject) => {
      this.addEventListener("loaded", (event) => resolve(event.detail), { once: true });
      this.addEventListener("error", (event) => reject(new Error(event.detail.error)), { once: true });
      this.addEventListener("overdue", (event) => reject(new Error(event.detail)), { once: true });
    });
  }

  /** Start the runtime of this tab; resolves with its state once requests are intercepted. */
  start(options = {}) {
    // Whatever step the start is at, a failure (the boot's bound included) ends it.
    const failed = new Promise((resolve, reject) => {
      this.addEventListener("error", (event) => reject(new Error(event.detail.error)), { once: true });
    });
    this.#started ??= Promise.race([this.#start(options), failed]).catch((error) => {
      if (this.status !== "error") this.#setStatus("error", { error: error.message });
      throw error;
    });
    return this.#started;
  }

  async #start({
    manifest = "plugins/plugins.json",
    timeout = 35000,
    base = BUILD.base,
    bootTimeout = BOOT_TIMEOUT,
    shared = null,
  } = {}) {
    const began = performance.now();
    this.#options = { manifest, timeout, base, shared };
    if (!("serviceWorker" in navigator)) {
      throw new Error("this browser has no service workers (is the page served over http://localhost or https?)");
    }
    // Both ways round: a bundle served under another path than it was built for cannot boot.
    if (SERVED_BASE !== base || !location.pathname.startsWith(base)) {
      const where = SERVED_BASE !== base ? `served from ${SERVED_BASE}` : `the page is at ${location.pathname}`;
      throw new Error(`this bundle was built for ${base} but ${where}: rebuild with --base ${SERVED_BASE}`);
    }
    this.#bound(bootTimeout);
    this.#setStatus("booting");
    const ready = new Promise((resolve, reject) => {
      this.addEventListener("ready", resolve, { once: true });
      this.addEventListener("error", (event) => reject(new Error(event.detail.error)), { once: true });
    });
    ready.catch(() => {}); // awaited below, unless an earlier step fails first
    this.#startWorker(base, manifest);

    const sw = navigator.serviceWorker;
    sw.addEventListener("message", (event) => this.#onServiceWorkerMessage(event.data));
    // A page this build's service worker already controls skips register(): Chromium can queue
    // it behind a soft update check, which it defers while the page loads (seconds, at times).
    if (sw.controller?.scriptURL !== this.#scriptURL()) {
      const registration = await sw.register(`${base}valor-sw.js?v=${VERSION}`, { scope: base });
      await this.#controlled(registration);
    }
    await this.#connect();
    // A later service worker (an update) has no port yet: give it one.
    sw.addEventListener("controllerchange", () => this.#connect().catch((e) => this.#fail(e)));
    // The runtime's prefixes, if they differ from those the service worker has (the build's).
    const runtimeReady = ready.then(() => {
      if (JSON.stringify(this.prefixes) === this.#sentPrefixes) return;
      return this.#send({ type: TYPE.SET_PREFIXES, prefixes: this.prefixes });
    });
    this.#watch();
    if (BUILD.fallback) {
      // Requests are intercepted now: the server answers them until this tab's runtime is ready.
      runtimeReady.catch((error) => console.warn("valor: the runtime did not start:", error.message));
      this.detail.startMs = Math.round(performance.now() - began);
      this.detail.fallback = BUILD.fallback;
      return this.detail;
    }
    await runtimeReady;
    this.detail.startMs = Math.round(performance.now() - began);
    return this.detail;
  }

  #bound(ms) {
    // start() and loaded() always settle: a runtime not ready after `ms` has failed to boot;
    // one still loading plug-ins then keeps answering, and loaded() says which still load.
    setTimeout(() => {
      const seconds = ms / 1000;
      if (this.status === "booting") {
        this.#fail(new Error(`the Valor runtime did not boot within ${seconds} s`));
      } else if (this.status === "ready" && this.detail.loading !== false) {
        const detail = `the plug-ins did not all load within ${seconds} s (see Valor.detail)`;
        this.dispatchEvent(new CustomEvent("overdue", { detail }));
      }
    }, ms);
  }

  #startWorker(base, manifest) {
    const url = `${base}valor-worker.js?v=${VERSION}`;
    const failed = (event) => this.#fail(new Error(`the runtime worker failed: ${event.message ?? "could not load"}`));
    const { shared } = this.#options;
    if (shared) {
      // Joined if the origin runs it already (it then answers BOOT with where it is).
      const worker = new SharedWorker(url, { type: "module", name: shared });
      worker.onerror = failed;
      worker.port.onmessage = (event) => this.#onWorkerMessage(event.data);
      this.#worker = {
        postMessage: (message, transfer) => worker.port.postMessage(message, transfer),
        terminate: () => worker.port.close(), // the other pages' runtime goes on
      };
    } else {
      this.#worker = new Worker(url, { type: "module" });
      this.#worker.onmessage = (event) => this.#onWorkerMessage(event.data);
      this.#worker.onerror = failed;
    }
    this.#worker.postMessage({ type: TYPE.BOOT, protocol: PROTOCOL.version, base, manifest, version: VERSION });
  }

  /** A fresh runtime in the same worker, for tests: `reset("stop")` closes the runtime (its
   * plug-ins, its store's connection; requests wait), `reset("start")` starts one on the
   * manifest again, which resolves once its plug-ins have loaded. Every page on it sees it. */
  async reset(stage) {
    if (!this.#worker) throw new Error("Valor.start() first");
    const done = new Promise((resolve) => this.#resets.set(stage, resolve));
    this.#worker.postMessage({ type: TYPE.RESET, stage });
    const { error } = await done;
    if (error) throw new Error(`resetting the runtime (${stage}) failed: ${error}`);
    return stage === "start" ? this.loaded() : this.detail;
  }

  // A plug-in that blocks the worker's thread (a sync endless loop) would wedge this tab's
  // runtime for good: the service worker answers 504s, but nothing else runs there. A ready
  // worker that has not answered a ping for longer than the request timeout is replaced by a
  // fresh one (plug-in state is lost, as when the server restarts).
  #watch() {
    this.#lastPong = performance.now();
    clearInterval(this.#watchdog);
    this.#watchdog = setInterval(() => {
      if (this.status !== "ready") this.#lastPong = performance.now();
      else if (performance.now() - this.#lastPong > this.#options.timeout) this.#restartWorker();
      else this.#worker.postMessage({ type: TYPE.PING });
    }, WATCH_INTERVAL);
  }

  #restartWorker() {
    const seconds = this.#options.timeout / 1000;
    if (this.#options.shared) {
      // Another page's worker too: a new one of that name would be the same one.
      this.#fail(new Error(`the shared runtime worker did not respond for ${seconds} s (a plug-in blocking it?)`));
      clearInterval(this.#watchdog);
      return;
    }
    console.warn(`valor: the runtime worker did not respond for ${seconds} s (a plug-in blocking it?): restarting it`);
    this.#worker.terminate();
    this.#setStatus("booting", { restarts: (this.detail.restarts ?? 0) + 1 });
    this.#startWorker(this.#options.base, this.#options.manifest);
    this.#lastPong = performance.now();
    this.#connect().catch((error) => this.#fail(error));
  }

  #scriptURL() {
    return new URL(`valor-sw.js?v=${VERSION}`, new URL(this.#options.base, location.href)).href;
  }

  async #controlled(registration) {
    const sw = navigator.serviceWorker;
    const wanted = this.#scriptURL();
    await new Promise((resolve, reject) => {
      // An update that called skipWaiting can still wait on the outgoing worker's last
      // events: remind it until it takes over.
      const nudge = setInterval(async () => {
        const waiting = (await sw.getRegistration(this.#options.base))?.waiting;
        if (waiting?.scriptURL === wanted) waiting.postMessage({ type: TYPE.SKIP_WAITING, nonce: 0 });
      }, NUDGE_INTERVAL);
      const timer = setTimeout(() => {
        clearInterval(nudge);
        reject(new Error(`the service worker did not take control of this page within ${CONTROL_TIMEOUT / 1000} s`));
      }, CONTROL_TIMEOUT);
      sw.addEventListener("controllerchange", () => {
        clearInterval(nudge);
        clearTimeout(timer);
        resolve();
      }, { once: true });
      // After a hard reload the active worker controls the page only once it claims it. (Only
      // then: a claim by an outgoing worker can hold up its successor's activation.)
      if (!sw.controller && registration.active?.scriptURL === wanted) {
        registration.active.postMessage({ type: TYPE.CLAIM, nonce: 0 });
      }
    });
  }

  async #connect() {
    const controller = navigator.serviceWorker.controller;
    if (!controller || !this.#worker) return;
    const channel = new MessageChannel();
    this.#worker.postMessage({ type: TYPE.PORT }, [channel.port1]);
    const { timeout, manifest } = this.#options;
    // Until the runtime is ready, the manifest's prefixes (from the build) are intercepted.
    const prefixes = this.prefixes ?? BUILD.prefixes;
    this.#sentPrefixes = JSON.stringify(prefixes);
    const connect = { type: TYPE.CONNECT, protocol: PROTOCOL.version, timeout, manifest, prefixes, version: VERSION };
    const ack = await this.#send(connect, [channel.port2]);
    if (ack.version !== VERSION) {
      // A stale service worker: fetch the new one; its controllerchange reconnects.
      const registration = await navigator.serviceWorker.getRegistration(this.#options.base);
      await registration?.update();
      console.warn(`valor: service worker ${ack.version} replaced by ${VERSION}`);
    }
    if (ack.protocol !== PROTOCOL.version) {
      // It refused the port, so this tab's runtime worker would never hear a request.
      this.#worker.terminate();
      throw new Error(`the service worker speaks Valor message protocol ${ack.protocol ?? "(none)"} and this page ${PROTOCOL.version}: they come from different builds; reload the page`);
    }
  }

  #send(message, transfer = []) {
    const nonce = ++this.#nonce;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#acks.delete(nonce);
        reject(new Error(`the service worker did not answer ${message.type}`));
      }, ACK_TIMEOUT);
      this.#acks.set(nonce, (ack) => {
        clearTimeout(timer);
        resolve(ack);
      });
      navigator.serviceWorker.controller.postMessage({ ...message, nonce }, transfer);
    });
  }

  #onServiceWorkerMessage(message) {
    if (message?.type === TYPE.ACK) {
      this.#acks.get(message.nonce)?.(message);
      this.#acks.delete(message.nonce);
    } else if (message?.type === TYPE.NEED_PORT && message.epoch !== this.#epoch) {
      // Every waiting request of a restarted service worker asks: one port answers them all.
      this.#epoch = message.epoch;
      this.#connect().catch((error) => {
        this.#epoch = null; // the next request's ask tries again
        console.warn("valor: reconnecting failed:", error);
      });
    }
  }

  #onWorkerMessage(message) {
    if (message.type === TYPE.PONG) {
      this.#lastPong = performance.now();
    } else if (message.type === TYPE.RESET) {
      this.#resets.get(message.stage)?.(message);
      this.#resets.delete(message.stage);
    } else if (message.type === TYPE.STATUS && message.protocol !== PROTOCOL.version) {
      this.#worker.terminate();
      this.#fail(new Error(`the runtime worker speaks Valor message protocol ${message.protocol ?? "(none)"} and this page ${PROTOCOL.version}: they come from different builds; reload the page`));
    } else if (message.type === TYPE.STATUS) {
      const { type, protocol, status, ...detail } = message;
      if (status === "ready") this.prefixes = detail.prefixes;
      this.#setStatus(status, detail);
    } else if (message.type === TYPE.LOADED) {
      const { type, ...detail } = message;
      this.prefixes = detail.prefixes;
      this.detail = { ...this.detail, ...detail };
      for (const type of ["loaded", "status"]) {
        this.dispatchEvent(new CustomEvent(type, { detail: this.detail }));
      }
    } else if (message.type === TYPE.SNAPSHOT) {
      // A bundle built without Node: this browser made its memory snapshot, for the next boots.
      this.detail = { ...this.detail, snapshotKept: message.kept, snapshotError: message.error };
      this.dispatchEvent(new CustomEvent("status", { detail: this.detail }));
    } else if (message.type === TYPE.LOGGED) {
      // An error the runtime logged under an error id, with its traceback: the last ones kept.
      const errors = [...(this.detail.errors ?? []), message.error].slice(-MAX_ERRORS);
      this.detail = { ...this.detail, errors };
      this.dispatchEvent(new CustomEvent("logged", { detail: message.error }));
    } else if (message.type === TYPE.PREFIXES) {
      this.prefixes = message.prefixes; // the worker told the service worker already
      this.dispatchEvent(new CustomEvent("prefixes", { detail: message.prefixes }));
    }
  }

  #fail(error) {
    console.error("valor:", error);
    this.#setStatus("error", { error: error.message });
  }

  #setStatus(status, detail = {}) {
    this.status = status;
    this.detail = { ...this.detail, ...detail, status };
    for (const type of [status, "status"]) {
      this.dispatchEvent(new CustomEvent(type, { detail: this.detail }));
    }
  }
}

export const Valor = new ValorRuntime();
globalThis.Valor = Valor;
