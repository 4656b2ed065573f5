// A JavaScript plug-in (type "js"): a Web Worker script, the same file in both hosts.
// It receives the request {url, method, headers: [[name, value], ...], body: ArrayBuffer | null}
// and answers with postMessage({status, headers, body}).
self.onmessage = (event) => {
  const { url, method, headers, body } = event.data;
  const path = new URL(url).pathname;
  if (method === "GET" && (path === "/" || path === "")) {
    postMessage({ status: 200, headers: { "content-type": "text/plain; charset=utf-8" }, body: "Hello Plugin!" });
  } else if (method === "POST" && path === "/echo") {
    const type = headers.find(([name]) => name.toLowerCase() === "content-type");
    postMessage({
      status: 200,
      headers: { "content-type": type ? type[1] : "application/octet-stream" },
      body,
    });
  } else {
    postMessage({ status: 404, headers: { "content-type": "application/json" }, body: { error: "no route", path } });
  }
};
