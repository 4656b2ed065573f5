// The transport floor: Valor's path without Python. Requests go over a tab's MessagePort to a
// module worker that answers in JavaScript, and back, exactly as Valor's service worker does.
self.addEventListener("install", (e) => e.waitUntil(self.skipWaiting()));
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
const ports = new Map(); // clientId -> port
const pending = new Map(); // id -> resolve
let nextId = 0;
self.addEventListener("message", (event) => {
  const port = event.ports[0];
  port.onmessage = ({ data }) => pending.get(data.id)?.(data);
  ports.set(event.source.id, port);
  event.source.postMessage("connected");
});
// Only the benchmark's two "plug-ins", as Valor intercepts only its prefixes: intercepting the
// whole scope took the worker's own script too when the tab's port came first, and that tab
// then waited for ever (the worker never started to answer it).
const ANSWERED = /^\/port\/(hello$|echo\/)/;
self.addEventListener("fetch", (event) => {
  const port = ports.get(event.clientId);
  if (!port || !ANSWERED.test(new URL(event.request.url).pathname)) return;
  event.respondWith((async () => {
    const request = event.request;
    const body = request.method === "GET" ? undefined : await request.arrayBuffer();
    let headers = "";
    for (const [name, value] of request.headers) headers += headers ? `\r\n${name}: ${value}` : `${name}: ${value}`;
    const id = ++nextId;
    const reply = await new Promise((resolve) => {
      pending.set(id, resolve);
      port.postMessage({ type: "request", id, url: request.url, method: request.method, headers, body }, body ? [body] : []);
    });
    pending.delete(id);
    return new Response(reply.body, { status: reply.status, headers: reply.headers });
  })());
});
