// Answers exactly what the request body describes, like answer.py:
// {"status": 200, "headers": [[name, value], ...], "body": "text"}.
const decoder = new TextDecoder();
self.onmessage = (event) => {
  const wanted = JSON.parse(decoder.decode(event.data.body));
  postMessage({ status: wanted.status ?? 200, headers: wanted.headers ?? [], body: wanted.body ?? null });
};
