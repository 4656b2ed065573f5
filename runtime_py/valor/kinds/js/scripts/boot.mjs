// Starts a JS plug-in inside a dedicated worker: imports the plug-in's script (its URL is the
// worker's name) unchanged, then tells the pool it is ready, or why it could not load.
// The same file runs in Deno on the server and in the browser.
if ("Deno" in globalThis) {
  // On the server stdout carries the frames to Valor: console output goes to stderr (the log).
  for (const level of ["log", "info", "debug"]) console[level] = console.error;
}
// A rejected promise (a throw in an async handler) crashes the worker, as a throw does: browsers
// only report it inside the worker, so rethrow it where the pool sees an error event.
self.addEventListener("unhandledrejection", (event) => {
  event.preventDefault();
  setTimeout(() => {
    throw event.reason;
  });
});
// A worker that ends itself (self.close()) gets no error event: it tells the pool first, which
// answers its request 502 and replaces it at once instead of at the request's timeout.
const closeWorker = self.close.bind(self);
self.close = () => {
  self.postMessage({ __valor: "closed" });
  closeWorker();
};
try {
  await import(self.name);
  self.postMessage({ __valor: "ready" });
} catch (error) {
  self.postMessage({ __valor: "error", error: String(error?.stack || error) });
}
