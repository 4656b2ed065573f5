// A worker in the original Valor's format: the body is an ArrayBuffer (or null). Of the headers
// it answers only x- ones: each client (httpx, Chromium) adds its own others.
self.onmessage = (event) => {
  const { url, method, headers, body } = event.data;
  const view = body === null ? null : new DataView(body);
  postMessage({
    status: 200,
    headers: [["content-type", "application/json"]],
    body: JSON.stringify({
      url,
      method,
      headers: headers.filter(([name]) => name.startsWith("x-")),
      bodyType: body === null ? "null" : Object.prototype.toString.call(body),
      bodyLength: view ? view.byteLength : null,
      firstByte: view && view.byteLength ? view.getUint8(0) : null,
    }),
  });
};
