// The floor: the same answers as the hello and echo plug-ins, straight from a service worker.
self.addEventListener("install", (e) => e.waitUntil(self.skipWaiting()));
self.addEventListener("activate", (e) => e.waitUntil(self.clients.claim()));
self.addEventListener("fetch", (event) => {
  const path = new URL(event.request.url).pathname;
  if (path === "/floor/hello") {
    event.respondWith(new Response("Hello Plugin!", {headers: {"content-type": "text/plain; charset=utf-8"}}));
  } else if (path.startsWith("/floor/echo")) {
    const type = event.request.headers.get("content-type") ?? "application/octet-stream";
    event.respondWith(event.request.arrayBuffer().then((b) => new Response(b, {headers: {"content-type": type}})));
  }
});
