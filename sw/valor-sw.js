// Valor's service worker: hands same-origin requests under the runtime's prefixes to the
// runtime worker of a tab, over a MessagePort that tab gave us. Everything else goes to the
// network untouched. It holds no state the browser cannot take away: when the browser stops
// it, the prefixes come back from Cache Storage and each tab is asked for a new port.
//
// Offline: at install it stores the bundle's files in a cache named after the build's version
// and answers them from there; activation deletes older versions' caches. A file asked for with
// `?v=VERSION` (the runtime worker's) comes from that version's cache first; Pyodide's files
// from this version's. The page's own files (the page, valor.js) come from the cache too while
// the static host serves this build, which each navigation asks (valor-bundle.json), and from
// the network first when it does not, so a new build is picked up on the next load.
//
// A classic worker in one file, as browsers register it: the build writes the message protocol
// (valor/protocol.py; docs/browser.md describes each message) and the build's stamp into it.

const BUILD = /*__VALOR_BUILD__*/null;
const PROTOCOL = /*__VALOR_PROTOCOL__*/null;
if (!BUILD || !PROTOCOL) throw new Error("valor-sw.js is the unbuilt source: serve the output of valor build");
const TYPE = PROTOCOL.types;
const VERSION = BUILD.version;
const SCOPE = new URL(self.registration.scope).pathname; // the bundle's base, ends with "/"
const ASSETS = new Set([SCOPE, ...BUILD.assets.map((a) => SCOPE + a)]);
const STATE_CACHE = "valor-state";
const FILES_CACHE = `valor-files:${SCOPE}:`; // + version: one per build and base
const CACHE_FIRST = `${SCOPE}pyodide/`; // Pyodide's files change only with a new Pyodide
const STATE_URL = `${self.registration.scope}__valor_state__`;
const DEFAULT_TIMEOUT = 35000; // ms; more than a plug-in's default 30 s, so its 504 wins
const NULL_BODY = new Set(PROTOCOL.null_body_statuses);
const OWN_PORT_GRACE = 1000; // ms to wait for a tab's own port when another tab could answer
// `valor build --fallback URL`: a server host with the same manifest answers until the tab's
// runtime is ready (or when it could not boot); if the server is unreachable, requests wait
// for the runtime as without one.
const FALLBACK = BUILD.fallback;
const CORS_HEADERS = ["access-control-allow-origin", "access-control-expose-headers"];

const tabs = new Map(); // clientId -> {port, status, prefixes}
const pending = new Map(); // request id -> settle(message)
const parts = new Map(); // request id -> take(message): the next part of a streamed answer
const portWaiters = new Map(); // clientId -> [resolve]
const refused = new Map(); // clientId -> why its page's port was refused (another protocol)
let state = null; // {prefixes, timeout, manifest}: all tabs' prefixes, persisted
let current = false; // a promise: does the static host serve this build? (asked per navigation)
let stateLoaded = null;
let nextId = 0;
// This instance of the worker: a tab answers each instance's many NEED_PORTs once.
const EPOCH = crypto.randomUUID();

self.addEventListener("install", (event) => event.waitUntil(Promise.all([precache(), self.skipWaiting()])));
self.addEventListener("activate", (event) => event.waitUntil(Promise.all([self.clients.claim(), dropOldCaches()])));
self.addEventListener("message", (event) => event.waitUntil(onMessage(event)));
self.addEventListener("fetch", onFetch);

// -- pages and ports ------------------------------------------------------------------------

async function onMessage(event) {
  const message = event.data ?? {};
  const source = event.source;
  await loadState(); // after a restart, keep the saved prefixes until the page sends its own
  if (message.type === TYPE.CONNECT && message.protocol !== PROTOCOL.version) {
    refuse(source.id, message.protocol);
  } else if (message.type === TYPE.CONNECT) {
    connect(source.id, event.ports[0]);
    state.timeout = message.timeout ?? DEFAULT_TIMEOUT;
    state.manifest = message.manifest ?? state.manifest;
    await pruneTabs();
    await setPrefixes(source.id, message.prefixes);
  } else if (message.type === TYPE.SET_PREFIXES) {
    await setPrefixes(source.id, message.prefixes);
  } else if (message.type === TYPE.CLAIM) {
    await self.clients.claim();
  } else if (message.type === TYPE.SKIP_WAITING) {
    await self.skipWaiting();
  } else {
    return;
  }
  source.postMessage({ type: TYPE.ACK, nonce: message.nonce, protocol: PROTOCOL.version, version: VERSION });
}

function refuse(clientId, protocol) {
  // A page of another build whose messages this worker would misread: its port is not used,
  // and its requests are answered with why (the page's start fails with the same reason).
  const detail = `this page speaks Valor message protocol ${protocol ?? "(none)"} and its service worker ${PROTOCOL.version}: they come from different builds; reload the page`;
  console.error(`valor: ${detail}`);
  refused.set(clientId, detail);
}

function connect(clientId, port) {
  // The previous port stays open: answers to requests already sent on it still arrive there.
  refused.delete(clientId);
  const previous = tabs.get(clientId);
  const tab = { port, status: "booting", prefixes: previous?.prefixes ?? null };
  tabs.set(clientId, tab);
  port.onmessage = (event) => {
    const message = event.data;
    if (message.type === TYPE.RESPONSE) pending.get(message.id)?.(message);
    else if (message.type === TYPE.PART || message.type === TYPE.END || message.type === TYPE.STREAM_ERROR) {
      parts.get(message.id)?.(message);
    }
    else if (message.type === TYPE.STATUS) tab.status = message.status;
    else if (message.type === TYPE.PREFIXES) setPrefixes(clientId, message.prefixes);
  };
  for (const resolve of portWaiters.get(clientId) ?? []) resolve(tab);
  portWaiters.delete(clientId);
}

async function pruneTabs() {
  // Chromium has no close event on ports: a closed tab's port just goes silent.
  const alive = new Set((await self.clients.matchAll({ type: "all" })).map((c) => c.id));
  for (const [id, tab] of tabs) {
    if (!alive.has(id)) {
      tab.port.close();
      tabs.delete(id);
    }
  }
  for (const id of refused.keys()) if (!alive.has(id)) refused.delete(id);
}

function setPrefixes(clientId, prefixes) {
  // Each tab's runtime has its own mounts (/_plugins changes one tab only): intercept them all.
  const tab = tabs.get(clientId);
  if (tab && prefixes) tab.prefixes = prefixes;
  const known = [...tabs.values()].filter((t) => t.prefixes);
  const all = known.length ? [...new Set(known.flatMap((t) => t.prefixes))] : (prefixes ?? state.prefixes);
  return saveState({ ...state, prefixes: all });
}

async function anyTab() {
  await pruneTabs();
  const all = [...tabs.values()];
  return all.find((tab) => tab.status === "ready") ?? all[0] ?? null;
}

function waitForPort(clientId, ms) {
  // The tab may have connected while this request was looking for it.
  const tab = tabs.get(clientId);
  if (tab) return Promise.resolve(tab);
  return new Promise((resolve) => {
    const waiters = portWaiters.get(clientId) ?? [];
    portWaiters.set(clientId, waiters);
    waiters.push(resolve);
    setTimeout(() => resolve(null), ms);
  });
}

// -- state that survives a stop of the service worker ----------------------------------------

async function saveState(next) {
  state = next; // at once: requests right after see the new prefixes
  const cache = await caches.open(STATE_CACHE);
  await cache.put(STATE_URL, new Response(JSON.stringify(state)));
}

function loadState() {
  stateLoaded ??= (async () => {
    const saved = await (await caches.open(STATE_CACHE)).match(STATE_URL);
    // The manifest's prefixes are intercepted from the start, before any runtime has booted.
    state ??= saved ? await saved.json() : { prefixes: BUILD.prefixes, timeout: DEFAULT_TIMEOUT };
  })();
  return stateLoaded;
}

// -- the bundle's files, kept for offline use -------------------------------------------------

async function precache() {
  const cache = await caches.open(FILES_CACHE + VERSION);
  // On a first visit the runtime worker fetches the same files at the same time: asking for the
  // very URLs it asks for (`?v=` for those it fetches itself) lets the HTTP cache serve them
  // once, instead of every large file crossing the network twice.
  const versioned = new Set(["valor-bundle.json", "valor-worker.js"]);
  try {
    const info = await (await fetch(`${SCOPE}valor-bundle.json?v=${VERSION}`, { cache: "no-cache" })).json();
    for (const path of [info.files_archive, info.runtime_wheel, info.snapshot?.path, info.requirements_archive]) {
      if (path) versioned.add(path);
    }
  } catch (problem) {
    console.warn(`valor: the bundle's file list is unreadable: ${problem.message}`);
  }
  await Promise.all(
    BUILD.assets.map(async (asset) => {
      const path = SCOPE + asset;
      const url = versioned.has(asset) ? `${path}?v=${VERSION}` : path;
      try {
        if (await cache.match(path)) return;
        const response = await fetch(url, { cache: "no-cache" });
        if (response.ok) await cache.put(path, response);
        else console.warn(`valor: not kept for offline use: ${url} answered ${response.status}`);
      } catch (problem) {
        console.warn(`valor: not kept for offline use: ${url}: ${problem.message}`);
      }
    }),
  );
}

async function dropOldCaches() {
  const names = await caches.keys();
  const old = names.filter((name) => name.startsWith(FILES_CACHE) && name !== FILES_CACHE + VERSION);
  await Promise.all(old.map((name) => caches.delete(name)));
}

async function fromFiles(request, url) {
  const path = url.pathname === SCOPE ? `${SCOPE}index.html` : url.pathname;
  const wanted = url.searchParams.get("v");
  if (wanted || path.startsWith(CACHE_FIRST)) {
    const cached = await caches.match(path, { cacheName: FILES_CACHE + (wanted ?? VERSION) });
    return cached ?? fetch(request);
  }
  if (request.mode === "navigate") current = isCurrent();
  if (await current) {
    const cached = await caches.match(path, { cacheName: FILES_CACHE + VERSION });
    if (cached) return cached;
  }
  try {
    return await fetch(request);
  } catch (offline) {
    const cached = await caches.match(path, { cacheName: FILES_CACHE + VERSION });
    if (cached) return cached;
    throw offline;
  }
}

async function isCurrent() {
  // Whether the static host still serves this build. If it does, the page's files come from
  // the cache: one small request per navigation instead of one per file, one after another as
  // the page discovers them. If not (a new build, or offline), they come from the network first.
  try {
    const response = await fetch(`${SCOPE}valor-bundle.json`, { cache: "no-cache" });
    return response.ok && (await response.json()).version === VERSION;
  } catch {
    return false;
  }
}

// -- requests -------------------------------------------------------------------------------

function onFetch(event) {
  const url = new URL(event.request.url);
  if (url.origin !== self.location.origin || !url.pathname.startsWith(SCOPE)) return;
  // A proxy plug-in's request to a same-origin upstream: the network's, never Valor's again.
  if (event.request.headers.has("x-valor-upstream")) return;
  if (ASSETS.has(url.pathname)) {
    if (event.request.method === "GET") event.respondWith(fromFiles(event.request, url));
    return;
  }
  if (state === null) {
    // Just restarted: decide once the saved prefixes are back.
    event.respondWith(
      loadState().then(() => (intercepts(url) ? answer(event) : fetch(event.request))),
    );
  } else if (intercepts(url)) {
    event.respondWith(answer(event));
  }
}

function intercepts(url) {
  const path = url.pathname;
  return state.prefixes.some((p) => path === p || path.startsWith(p.endsWith("/") ? p : `${p}/`));
}

function answer(event) {
  const request = event.request;
  const hasBody = request.method !== "GET" && request.method !== "HEAD";
  const clientId = clientIdOf(event);
  const tab = clientId ? tabs.get(clientId) : undefined;
  if (FALLBACK && !runtimeReady(tab)) return answerByServer(event, hasBody);
  // The common case, without a single await: this tab's port is known and there is no body.
  if (tab && !hasBody) return send(tab, request, undefined, Date.now() + timeoutMs());
  return answerSlowly(event, hasBody);
}

function runtimeReady(tab) {
  // This tab's runtime, or, for a client that has none, any tab's.
  if (tab) return tab.status === "ready";
  return [...tabs.values()].some((other) => other.status === "ready");
}

async function answerByServer(event, hasBody) {
  const request = event.request;
  if (event.clientId && !tabs.has(event.clientId)) {
    // Restarted, this service worker lost the tab's port: the server answers while the tab
    // sends a new one (its runtime may well be ready).
    self.clients.get(event.clientId).then((client) => client?.postMessage({ type: TYPE.NEED_PORT, epoch: EPOCH }));
  }
  const body = hasBody ? await request.arrayBuffer() : undefined;
  const url = new URL(request.url);
  const target = FALLBACK + url.pathname.slice(SCOPE.length) + url.search;
  try {
    const reply = await fetch(target, {
      method: request.method,
      headers: request.headers,
      body,
      mode: "cors",
      credentials: "omit",
      cache: "no-store",
      redirect: "manual", // a plug-in's redirect is the answer, not something to follow
    });
    if (reply.type !== "opaqueredirect") {
      // A same-origin answer, with every header the server exposed (x-valor-host: server)
      // but those of the cross-origin call itself.
      const headers = new Headers(reply.headers);
      for (const name of CORS_HEADERS) headers.delete(name);
      if (headers.get("vary")?.toLowerCase() === "origin") headers.delete("vary");
      const content = NULL_BODY.has(reply.status) ? null : await reply.arrayBuffer();
      return new Response(content, { status: reply.status, statusText: reply.statusText, headers });
    }
  } catch (unreachable) {
    console.warn(`valor: the fallback server ${FALLBACK} is unreachable (${unreachable.message}): waiting for the runtime`);
  }
  return answerSlowly(event, hasBody, body);
}

async function answerSlowly(event, hasBody, readBody = undefined) {
  const deadline = Date.now() + timeoutMs();
  const refusal = refused.get(clientIdOf(event));
  const tab = refusal ? null : await findTab(event, timeoutMs());
  if (tab === "boot") return bootPage();
  if (!tab) {
    return error(503, refusal ?? "no Valor runtime is running for this page: call Valor.start() first");
  }
  const body = hasBody ? (readBody ?? (await event.request.arrayBuffer())) : undefined;
  return send(tab, event.request, body, deadline);
}

function send(tab, request, body, deadline) {
  const id = ++nextId;
  // Headers as "name: value" lines: one string crosses into Python faster than a list of pairs
  // (fetch forbids CR and LF in header names and values).
  let headers = "";
  for (const [name, value] of request.headers) headers += headers ? `\r\n${name}: ${value}` : `${name}: ${value}`;
  const message = { type: TYPE.REQUEST, id, url: request.url, method: request.method, headers, body };
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      const seconds = timeoutMs() / 1000;
      resolve(
        tab.status === "ready"
          ? error(504, `the browser runtime did not answer within ${seconds} seconds`)
          : error(503, `the Valor runtime is still booting (waited ${seconds} seconds)`),
      );
    }, Math.max(0, deadline - Date.now()));
    pending.set(id, (reply) => {
      clearTimeout(timer);
      pending.delete(id);
      resolve(toResponse(reply.stream ? { ...reply, body: streamed(tab.port, id) } : reply));
    });
    tab.port.postMessage(message, body ? [body] : []);
  });
}

function streamed(port, id) {
  // Pull-based: a part is asked for only when the page's reader wants one (one credit per
  // pull, one part in flight), so a fast plug-in cannot fill memory. The runtime times out a
  // stream that stalls; this timer only catches a runtime that is gone (its tab closed).
  // Cancelling the body (the page went away) closes the plug-in's generator.
  return new ReadableStream(
    {
      pull(controller) {
        return new Promise((resolve) => {
          const timer = setTimeout(() => {
            parts.get(id)?.({ type: TYPE.STREAM_ERROR, detail: "the browser runtime stopped answering" });
          }, timeoutMs());
          parts.set(id, (message) => {
            clearTimeout(timer);
            parts.delete(id);
            if (message.type === TYPE.PART) controller.enqueue(new Uint8Array(message.body));
            else if (message.type === TYPE.END) controller.close();
            else controller.error(new Error(message.detail));
            resolve();
          });
          port.postMessage({ type: TYPE.PULL, id });
        });
      },
      cancel() {
        parts.delete(id);
        port.postMessage({ type: TYPE.CANCEL, id });
      },
    },
    { highWaterMark: 1 },
  );
}

function timeoutMs() {
  return state.timeout ?? DEFAULT_TIMEOUT;
}

// A navigation's answer is a new page, not its initiator's: Chromium gives a navigation the id
// of the page that started it, which may never run Valor (and never send a port).
function clientIdOf(event) {
  return event.request.mode === "navigate" ? "" : event.clientId;
}

async function findTab(event, timeout) {
  const clientId = clientIdOf(event);
  if (!clientId) {
    // A navigation has no client yet: a live tab answers, else a page that boots a runtime.
    return (await anyTab()) ?? (event.request.mode === "navigate" ? "boot" : null);
  }
  const own = tabs.get(clientId);
  if (own) return own;
  const client = await self.clients.get(clientId);
  if (client) client.postMessage({ type: TYPE.NEED_PORT, epoch: EPOCH });
  const other = await anyTab();
  // A page that never starts Valor (or a worker) is served by another tab's runtime.
  const grace = other && client?.type !== "window" ? 0 : other ? OWN_PORT_GRACE : timeout;
  return (await waitForPort(clientId, grace)) ?? other;
}

function toResponse({ status, reason, headers, body }) {
  try {
    // One append per pair: a header the plug-in repeats is kept, in order, as on the server.
    const list = new Headers();
    for (const [name, value] of headers) list.append(name, value);
    return new Response(NULL_BODY.has(status) ? null : body, { status, statusText: reason, headers: list });
  } catch (problem) {
    return error(502, `the plug-in's answer is not a valid HTTP response: ${problem.message}`);
  }
}

function error(status, detail) {
  // The runtime's JSON error body (responses.error_message), as the build describes it.
  const shape = PROTOCOL.error_body;
  const reason = PROTOCOL.reasons[status] ?? shape.fallback_reason;
  const fields = { [shape.status_field]: status, [shape.reason_field]: reason, [shape.detail_field]: detail };
  return new Response(JSON.stringify(fields), { status, statusText: reason, headers: shape.headers });
}

function bootPage() {
  const options = JSON.stringify({ manifest: state.manifest, timeout: state.timeout });
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Valor</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font: 15px system-ui, sans-serif; margin: 2rem">
<p id="valor-boot">Starting the Valor runtime…</p>
<script type="module">
import { Valor } from "${SCOPE}valor.js";
const note = document.getElementById("valor-boot");
try {
  await Valor.start(${options});
  const response = await fetch(location.href);
  const type = response.headers.get("content-type") ?? "";
  if (type.startsWith("text/html")) {
    document.open(); document.write(await response.text()); document.close();
  } else {
    const pre = document.createElement("pre");
    pre.style.whiteSpace = "pre-wrap";
    pre.textContent = await response.text();
    note.textContent = response.status + " " + response.statusText;
    note.after(pre);
  }
} catch (problem) {
  note.textContent = "The Valor runtime could not start: " + problem.message;
}
</script></body></html>`;
  return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } });
}
