// The server side of a JS plug-in: a long-lived Deno process holding a WorkerPool, spoken to
// over stdin/stdout with frames (see valor/kinds/shared/process.py):
//   u32 BE id | u32 BE length | u32 LE head length | JSON head | body
// Usage: deno run deno_host.mjs PLUGIN_URL [WORKERS]
import { WorkerPool } from "./pool.mjs";

for (const level of ["log", "info", "debug"]) console[level] = console.error;

const [pluginUrl, workers] = Deno.args;
const bootUrl = new URL("./boot.mjs", import.meta.url);
const pool = new WorkerPool(
  () => new Worker(bootUrl, { type: "module", name: pluginUrl }),
  Number(workers) || 2,
);
const encoder = new TextEncoder();
const decoder = new TextDecoder();
let writing = Promise.resolve();

function send(id, head, body = new Uint8Array(0)) {
  const headBytes = encoder.encode(JSON.stringify(head));
  const size = 4 + headBytes.length + body.length;
  const frame = new Uint8Array(8 + size);
  const view = new DataView(frame.buffer);
  view.setUint32(0, id);
  view.setUint32(4, size);
  view.setUint32(8, headBytes.length, true);
  frame.set(headBytes, 12);
  frame.set(body, 12 + headBytes.length);
  writing = writing.then(() => writeAll(frame));
}

async function writeAll(bytes) {
  for (let offset = 0; offset < bytes.length; ) {
    offset += await Deno.stdout.write(bytes.subarray(offset));
  }
}

function handle(id, payload) {
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const headLength = view.getUint32(0, true);
  const head = JSON.parse(decoder.decode(payload.subarray(4, 4 + headLength)));
  if (head.cancel) return pool.cancel(id);
  const body = payload.subarray(4 + headLength);
  const request = { url: head.url, method: head.method, headers: head.headers, body: body.length ? body : null };
  pool.answer(id, request).then((answer) => {
    if (answer.error !== undefined) send(id, answer);
    else send(id, { status: answer.status, headers: answer.headers }, answer.body);
  });
}

/** Reads exact byte counts from a stream without re-copying what it has buffered. */
class ExactReader {
  #reader;
  #chunks = [];
  #length = 0;
  constructor(stream) {
    this.#reader = stream.getReader();
  }
  async read(n) {
    while (this.#length < n) {
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#chunks.push(value);
      this.#length += value.length;
    }
    const out = new Uint8Array(n);
    for (let offset = 0; offset < n; ) {
      const chunk = this.#chunks[0];
      const take = Math.min(chunk.length, n - offset);
      out.set(chunk.subarray(0, take), offset);
      offset += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    this.#length -= n;
    return out;
  }
}

try {
  await pool.start();
} catch (error) {
  send(0, { error: String(error?.message || error) });
  await writing;
  Deno.exit(0);
}
send(0, { ready: true });
const input = new ExactReader(Deno.stdin.readable);
for (;;) {
  const header = await input.read(8);
  if (!header) break;
  const view = new DataView(header.buffer);
  const payload = await input.read(view.getUint32(4));
  if (!payload) break;
  handle(view.getUint32(0), payload);
}
pool.close();
await writing;
Deno.exit(0);
