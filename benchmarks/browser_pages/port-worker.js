// The transport floor's runtime worker: the hello and echo answers in JavaScript.
const HELLO = new TextEncoder().encode("Hello Plugin!");
self.onmessage = (event) => {
  const port = event.ports[0];
  port.onmessage = ({ data: { id, url, headers, body } }) => {
    const echo = new URL(url).pathname.startsWith("/port/echo");
    const bytes = echo ? new Uint8Array(body) : HELLO.slice();
    const type = echo
      ? (headers.split("\r\n").find((l) => l.startsWith("content-type: "))?.slice(14) ?? "application/octet-stream")
      : "text/plain; charset=utf-8";
    port.postMessage({ type: "response", id, status: 200, headers: [["content-type", type]], body: bytes }, [bytes.buffer]);
  };
};
