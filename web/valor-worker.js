// The runtime worker (a module worker, one per tab): boots Pyodide, installs the Valor runtime
// from the bundle and answers requests that the service worker sends over a MessagePort. Its
// messages, to the page and on the port: valor/protocol.py, written in by the build (see
// docs/browser.md). Started as a shared worker (`Valor.start({shared})`, which valor_page uses
// between tests), it serves the pages of the origin that join it: one runtime, booted once,
// reset between tests (RESET) instead of booted again.

const PROTOCOL = /*__VALOR_PROTOCOL__*/null;
if (!PROTOCOL) throw new Error("valor-worker.js is the unbuilt source: serve the output of valor build");
const TYPE = PROTOCOL.types;
let host = null; // the Python WorkerHost (valor.browser), once booted
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
let booted = null; // what a reset starts the runtime again with: {pyodide, base, manifest, ...}
let booting = false; // a BOOT came: a shared worker's later pages join instead
let lastStatus = { status }; // the last STATUS and LOADED, for a page that joins
let lastLoaded = null;
const SHARED = typeof SharedWorkerGlobalScope !== "undefined" && self instanceof SharedWorkerGlobalScope;
const pages = new Set(); // a shared worker's pages (their ports); a dedicated one has `self`

// Handlers first, before any await: a module worker drops messages that find no handler.
if (SHARED) {
  self.onconnect = (event) => {
    const page = event.ports[0];
    pages.add(page);
    page.onmessage = (message) => fromPage(message, page);
    page.addEventListener("close", () => pages.delete(page)); // where a browser tells
  };
} else {
  self.onmessage = (event) => fromPage(event, self);
}

function fromPage(event, page) {
  const message = event.data;
  if (message.type === TYPE.PORT) adopt(event.ports[0]);
  else if (message.type === TYPE.BOOT && booting) greet(page);
  else if (message.type === TYPE.BOOT) boot(message);
  else if (message.type === TYPE.PING) page.postMessage({ type: TYPE.PONG });
  else if (message.type === TYPE.RESET) reset(message, page);
}

function toPages(message) {
  if (!SHARED) return self.postMessage(message);
  for (const page of pages) page.postMessage(message); // a closed page's port drops it
}

function greet(page) {
  // A page joining a shared runtime: where it is, as the pages before it heard it.
  page.postMessage({ type: TYPE.STATUS, protocol: PROTOCOL.version, ...lastStatus });
  if (lastLoaded) page.postMessage(lastLoaded);
  if (!host) return;
  const prefixes = host.prefixes;
  page.postMessage({ type: TYPE.PREFIXES, prefixes: prefixes.toJs() });
  prefixes.destroy();
}

function adopt(newPort) {
  // A new port means the service worker restarted or was updated. Older ports stay open a
  // while, for answers to requests that came on them; the oldest are closed.
  ports.push(newPort);
  while (ports.length > KEEP_PORTS) ports.shift().close();
  port = newPort;
  port.onmessage = (event) => receive(newPort, event.data);
  newPort.postMessage({ type: TYPE.STATUS, status });
}

function receive(from, message) {
  if (message.type === TYPE.PULL) return pull(from, message.id);
  if (message.type === TYPE.CANCEL) return cancel(from, message.id);
  if (message.type !== TYPE.REQUEST) return;
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
    reply = { type: TYPE.RESPONSE, id, status, reason, headers: pairs, body: bytes };
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
  if (stream === undefined) return to.postMessage({ type: TYPE.END, id });
  try {
    const later = pullPart(stream);
    const part = await later;
    later.destroy();
    if (part === undefined) {
      streams.get(to).delete(id);
      to.postMessage({ type: TYPE.END, id });
    } else {
      to.postMessage({ type: TYPE.PART, id, body: part }, [part.buffer]);
    }
  } catch (error) {
    // Logged by the runtime under an error id, which the message names.
    streams.get(to)?.delete(id);
    const detail = String(error?.message ?? error).trim().split("\n").pop();
    to.postMessage({ type: TYPE.STREAM_ERROR, id, detail });
  }
}

function cancel(to, id) {
  const stream = streams.get(to)?.get(id);
  if (stream === undefined) return;
  streams.get(to).delete(id);
  cancelStream(stream)?.destroy?.();
}

function failure(id, status, detail) {
  // The runtime's JSON error body (responses.error_message), as the build describes it.
  const shape = PROTOCOL.error_body;
  const reason = PROTOCOL.reasons[status] ?? shape.fallback_reason;
  const fields = { [shape.status_field]: status, [shape.reason_field]: reason, [shape.detail_field]: detail };
  const body = new TextEncoder().encode(JSON.stringify(fields));
  return { type: TYPE.RESPONSE, id, status, reason, headers: shape.headers, body };
}

function setStatus(next, extra = {}) {
  status = next;
  lastStatus = { status, ...extra };
  toPages({ type: TYPE.STATUS, protocol: PROTOCOL.version, status, ...extra });
  port?.postMessage({ type: TYPE.STATUS, status });
}

async function reset({ stage }, page) {
  // Between two tests (valor_page): "stop" closes the runtime (its plug-ins' on_destroy, its
  // store's connection), so the test's storage can be emptied; "start" starts a fresh one in
  // this Pyodide, as a boot does after loading it. Requests in between wait for it.
  let error;
  try {
    if (!booted) throw new Error("the runtime has not booted");
    if (stage === "stop") await stopRuntime();
    else if (stage === "start") await startRuntime(booted.pyodide, booted.base, booted.manifest, booted.options());
    else throw new Error(`no such stage of a reset: ${stage}`);
  } catch (failed) {
    error = String(failed?.message ?? failed);
    if (stage === "start") {
      // As a failed boot: the pages hear why, and requests are answered 503 with it.
      bootFailure = `the browser runtime failed to start again: ${error}`;
      setStatus("error", { error });
      for (const [from, { id }] of waiting.splice(0)) from.postMessage(failure(id, 503, bootFailure));
    }
  }
  page.postMessage({ type: TYPE.RESET, stage, ...(error ? { error } : {}) });
}

async function stopRuntime() {
  const old = host;
  if (!old) return;
  for (const proxy of [handle, pullPart, cancelStream]) proxy.destroy();
  host = handle = pullPart = cancelStream = null;
  streams.clear();
  lastLoaded = null;
  setStatus("booting");
  try {
    await old.close();
  } finally {
    old.destroy();
  }
}

async function boot({ protocol, base, manifest, version }) {
  booting = true;
  const started = performance.now();
  const { steps, step } = stepTimer();
  const warnings = [];
  try {
    if (protocol !== PROTOCOL.version) {
      throw new Error(`the page speaks Valor message protocol ${protocol ?? "(none)"} and this runtime worker ${PROTOCOL.version}: they come from different builds; reload the page`);
    }
    const bundle = buildFiles(base, version);
    // Pyodide first: its start is the longest chain (its module, then its wasm, standard library
    // and lock file), and none of it waits for the bundle's list.
    const pyodideModule = import(`${base}pyodide/pyodide.mjs`);
    pyodideModule.catch(() => {}); // reported when used
    // The script pyodide.mjs imports first thing (the same URL, so one fetch): asked for now,
    // and handed to it (loadPython), which gives this worker Emscripten's module.
    const asmModule = import(`${base}pyodide/pyodide.asm.mjs`);
    asmModule.catch(() => {});
    const info = JSON.parse(new TextDecoder().decode(await step("bundle", () => bundle.read("valor-bundle.json"))));
    // Then everything else at once: the snapshot, the runtime wheel, the plug-ins' files.
    const snapshot = await findSnapshot(bundle, info);
    const archives = readArchives(bundle, info, step);
    const { loadPyodide } = await pyodideModule;
    const { default: createModule } = await asmModule;
    const load = { info, snapshot, archives, step, warnings, createModule };
    const pyodide = await loadPython(loadPyodide, bundle, load);
    const fromSnapshot = Boolean(snapshot.bytes) && warnings.length === 0;
    booted = {
      pyodide, base, manifest,
      options: () => ({ started: performance.now(), steps: {}, fromSnapshot, warnings }),
    };
    await startRuntime(pyodide, base, manifest, { started, steps, fromSnapshot, warnings });
    if (info.snapshot_in_browser && !fromSnapshot) snapshot.kept.make(info.runtime_wheel);
  } catch (error) {
    console.error("valor: the runtime failed to boot", error);
    bootFailure = `the browser runtime failed to boot: ${error?.message ?? error}`;
    setStatus("error", { error: String(error?.message ?? error), warnings });
    for (const [from, { id }] of waiting.splice(0)) from.postMessage(failure(id, 503, bootFailure));
  }
}

function stepTimer() {
  // How long each boot step took, in ms: Valor.detail.steps.
  const steps = {};
  const step = async (name, work) => {
    const t = performance.now();
    const result = await work();
    steps[name] = Math.round(performance.now() - t);
    return result;
  };
  return { steps, step };
}

async function findSnapshot(bundle, info) {
  // The bundle's snapshot, or for a bundle built without Node one this browser made after an
  // earlier boot (kept with the build's files). Its bytes are asked for at once.
  const kept = keptSnapshot(bundle);
  const made = info.snapshot ? null : info.snapshot_in_browser ? await kept.find() : null;
  const source = info.snapshot ?? (made && { path: "the one made in this browser", key: kept.key });
  const bytes = info.snapshot ? bundle.read(info.snapshot.path) : made && Promise.resolve(made);
  bytes?.catch(() => {}); // reported when used
  return { kept, made, source, bytes };
}

function readArchives(bundle, info, step) {
  // The runtime wheel, the plug-ins' files and the requirements (laid out as installed: written
  // beside the runtime, no installer), all asked for at once. A missing one is fatal, with or
  // without a snapshot; each is reported when used.
  const fatal = (error) => {
    throw Object.assign(error, { fatal: true });
  };
  const read = (path, name) => {
    const bytes = (name ? step(name, () => bundle.read(path)) : bundle.read(path)).catch(fatal);
    bytes.catch(() => {});
    return bytes;
  };
  return {
    wheel: read(info.runtime_wheel),
    files: read(info.files_archive, "files"),
    requirements: info.requirements_archive ? read(info.requirements_archive, "requirements") : null,
  };
}

async function loadPython(loadPyodide, bundle, { info, snapshot, archives, step, warnings, createModule }) {
  const indexURL = `${bundle.base}pyodide/`;
  // The snapshot holds imported modules, not their files: the wheel's files go on the file
  // system for what is read later (tracebacks' source lines, lazy imports), the plug-ins'
  // files under /valor, where the bundle's manifest names them. Pyodide calls fsInit while
  // it sets up its file system (it says where site-packages is), before Python starts, and
  // goes on if it fails: the failure is thrown once Pyodide has loaded.
  let unpacked = null;
  let Module = null; // Emscripten's module, for the shared libraries
  let restoring = null; // what preloadDynlibs needs, while a boot from the snapshot loads
  const fsInit = (FS, { sitePackages }) => {
    const restore = restoring;
    unpacked = (async () => {
      unzip(await archives.wheel, sitePackages, FS);
      if (archives.requirements) unzip(await archives.requirements, sitePackages, FS);
      unzip(await archives.files, "/valor", FS);
      if (restore) await preloadDynlibs(Module, sitePackages, restore);
    })();
    return unpacked.catch(() => {});
  };
  const createPyodideModule = (settings) => {
    Module = settings;
    return createModule(settings);
  };
  const load = (options) => bundle.serving(indexURL, () => loadPyodide({ indexURL, fsInit, createPyodideModule, ...options }));
  if (snapshot.bytes) {
    try {
      return await step("pyodide", async () => {
        const heap = snapshot.bytes.then(inflateSnapshot);
        // A snapshot made with the requirements' compiled libraries loaded: they are compiled
        // while Pyodide loads, and loaded before the heap is restored (preloadDynlibs).
        const { dynlibs = [], tables = [], handles = {} } = (!snapshot.made && info.snapshot) || {};
        const compiled = dynlibs.length ? compileDynlibs(archives.requirements, dynlibs) : Promise.resolve([]);
        compiled.catch(() => {}); // reported when used
        restoring = { heap, dynlibs, tables, handles, compiled };
        const booted = await load({ _loadSnapshot: heap }).finally(() => (restoring = null));
        await unpacked;
        booted.pyimport("valor.snapshot").restore(snapshot.source.key, navigator.language ?? "");
        return booted;
      });
    } catch (error) {
      if (error.fatal) throw error;
      // Made for another Pyodide or build, or damaged: boot as without one.
      const warning = `the memory snapshot ${snapshot.source.path} was skipped (${summary(error)}): booted without it`;
      console.warn(`valor: ${warning}`);
      warnings.push(warning);
      if (snapshot.made) await snapshot.kept.drop(); // made again after this boot
    }
  } else if (info.snapshot_in_browser) {
    warnings.push("this bundle has no memory snapshot (built without Node): booted without it; this browser makes one for its next boots");
  } else {
    warnings.push("this bundle has no memory snapshot (built with --no-snapshot): booted without it");
  }
  const pyodide = await step("pyodide", () => load({}));
  await unpacked;
  return pyodide;
}

async function compileDynlibs(archive, names) {
  // The shared libraries the snapshot was made with, from the requirements' archive.
  if (!archive) throw new Error("the bundle has no requirements' archive");
  const files = zipEntries(await archive);
  return Promise.all(names.map((name) => {
    if (!files.has(name)) throw new Error(`${name} is not in the requirements' archive`);
    return WebAssembly.compile(files.get(name));
  }));
}

async function preloadDynlibs(Module, sitePackages, { heap, dynlibs, tables, handles, compiled }) {
  // Before Python starts and the heap is restored: the memory as large as the snapshot's heap
  // (Pyodide starts with 30 MB), then the requirements' shared libraries loaded as snapshot.mjs
  // loaded them when it made the snapshot (in order, before Python starts), so each gets the
  // same memory and function table slots, which the restored heap points into. Their dlopen
  // handles name them again.
  const size = (await heap).length;
  if (Module.HEAP8.length < size) Module.growMemory(size);
  const modules = await compiled;
  dynlibs.forEach((name, index) => {
    const path = `${sitePackages}/${name}`;
    const table = Module.wasmTable;
    if (table.length > tables[index]) {
      throw new Error(`the function table has ${table.length} slots, the snapshot's libraries start at ${tables[index]}`);
    }
    table.grow(tables[index] - table.length);
    const dso = Module.newDSO(path, undefined, "loading");
    dso.refcount = Infinity;
    dso.global = false;
    dso.exports = Module.loadWebAssemblyModule(modules[index], { loadAsync: false }, path, {});
    for (const handle of handles[name] ?? []) Module.LDSO.loadedLibsByHandle[handle] = dso;
  });
}

async function startRuntime(pyodide, base, manifest, { started, steps, fromSnapshot, warnings }) {
  const browser = pyodide.pyimport("valor.browser");
  // The service worker hears of new prefixes on the port, before the /_plugins answer that
  // caused them, so a request to a new plug-in right after it is intercepted.
  const onChange = (prefixes) => {
    port?.postMessage({ type: TYPE.PREFIXES, prefixes });
    toPages({ type: TYPE.PREFIXES, prefixes });
  };
  // The runtime answers at once; a request to a plug-in still loading waits for it.
  const loading = performance.now();
  host = await browser.start(`/valor/${manifest}`, base.replace(/\/$/, ""), onChange);
  browser.destroy();
  // Errors logged under an error id (a plug-in's, after its answer too): Valor.detail.errors.
  host.report_errors((error) => toPages({ type: TYPE.LOGGED, error: JSON.parse(error) }));
  const state = host.describe().toJs({ dict_converter: Object.fromEntries });
  handle = host.handle;
  pullPart = host.pull;
  cancelStream = host.cancel;
  const bootMs = Math.round(performance.now() - started);
  bootFailure = null; // a reset's runtime after one that failed to start
  setStatus("ready", { ...state, bootMs, steps, snapshot: fromSnapshot, warnings });
  for (const [from, message] of waiting.splice(0)) answer(from, message);
  const mine = host;
  const later = host.loaded();
  const loaded = (await later).toJs({ dict_converter: Object.fromEntries });
  later.destroy();
  if (host !== mine) return; // stopped while loading (a reset)
  steps.plugins = Math.round(performance.now() - loading);
  lastLoaded = { type: TYPE.LOADED, ...loaded, steps };
  toPages(lastLoaded);
}

function summary(error) {
  // A Python error's last line names it; a JavaScript error's first line does.
  const lines = String(error?.message ?? error).trim().split("\n");
  return lines[0].startsWith("Traceback") ? lines.at(-1) : lines[0];
}

function unzip(archive, folder, FS) {
  // The build stores the runtime wheel and plugins.zip uncompressed, so writing their files
  // from here is a copy each: a few ms, where Python's zipfile took tens on a fresh boot.
  for (const [name, bytes] of zipEntries(archive)) {
    const path = `${folder}/${name}`;
    FS.mkdirTree(path.slice(0, path.lastIndexOf("/")));
    FS.writeFile(path, bytes);
  }
}

function zipEntries(archive) {
  // A stored (uncompressed) archive's files: name -> bytes (views into the archive).
  const files = new Map();
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
    files.set(name, archive.subarray(start, start + size));
  }
  return files;
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
      // In a worker of its own, after this runtime is ready: see valor-snapshot.js. A shared
      // worker (valor_page's runtime) cannot start one; the next dedicated one will make it.
      if (typeof Worker === "undefined") {
        toPages({ type: TYPE.SNAPSHOT, kept: false, error: "a shared worker cannot start the snapshot's worker" });
        return;
      }
      const maker = new Worker(`${base}valor-snapshot.js?v=${version}`, { type: "module" });
      maker.onmessage = ({ data }) => {
        maker.terminate();
        if (data.type === TYPE.FAILED) console.warn(`valor: making the memory snapshot failed: ${data.error}`);
        toPages({ type: TYPE.SNAPSHOT, kept: data.type === TYPE.KEPT, error: data.error });
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
