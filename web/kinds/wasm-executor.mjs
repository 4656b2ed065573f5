// Runs one wasm or WASI plug-in in the browser, in its own dedicated worker so the runtime can
// terminate it when a request runs past its timeout (an endless loop cannot be interrupted any
// other way). Only the engine: it compiles, instantiates and calls. The wasm ABI (which exports
// to call, with what, and what the answer means), the memory cap (set in the module's bytes) and
// CGI stay in Python (valor.loaders.wasm, valor.loaders.wasm_limits, valor.loaders.cgi).
//
// In:  {type: "load", mode: "wasm" | "wasi", bytes}   -> {type: "loaded", imports, exports} | {type: "error", error}
//      {type: "call", id, op, args}           (wasm)  -> {id, value} | {id, error, trap}
//        op: "start" (a new instance) | "call" [export, ...args] | "write" [ptr, bytes]
//            | "read" [ptr, len] | "size" []; an i64 result comes back as text
//      {type: "call", id, argv, env, stdin}   (wasi)  -> {id, stdout, stderr, code} | {id, error, trap}

let mode = null;
let module = null;
let instance = null; // wasm kind: the one Python started, until a step fails

self.onmessage = async ({ data }) => {
  if (data.type === "load") {
    try {
      mode = data.mode;
      module = await WebAssembly.compile(data.bytes);
      const imports = WebAssembly.Module.imports(module).map((i) => `${i.module}.${i.name}`);
      const exports = Object.fromEntries(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
      self.postMessage({ type: "loaded", imports, exports });
    } catch (error) {
      self.postMessage({ type: "error", error: String(error?.message || error) });
    }
  } else if (data.type === "call") {
    let answer;
    try {
      answer = mode === "wasm" ? step(data) : runWasi(data);
    } catch (error) {
      instance = null; // a trap leaves the instance in an unknown state
      answer = { error: String(error?.message || error), trap: error instanceof WebAssembly.RuntimeError };
    }
    const transfer = [answer.value, answer.stdout].filter((b) => b instanceof Uint8Array).map((b) => b.buffer);
    self.postMessage({ id: data.id, ...answer }, transfer);
  }
};

function step({ op, args }) {
  if (op === "start") {
    instance = new WebAssembly.Instance(module, {});
    return { value: null };
  }
  if (!instance) throw new Error("no instance (it failed)");
  const { memory } = instance.exports;
  switch (op) {
    case "call": {
      const value = instance.exports[args[0]](...args.slice(1));
      return { value: typeof value === "bigint" ? value.toString() : (value ?? null) };
    }
    case "write":
      new Uint8Array(memory.buffer, args[0], args[1].length).set(args[1]);
      return { value: null };
    case "read":
      return { value: new Uint8Array(memory.buffer, args[0], args[1]).slice() };
    case "size":
      return { value: memory.buffer.byteLength };
    default:
      throw new Error(`unknown step ${op}`);
  }
}

function runWasi({ argv, env, stdin }) {
  const wasi = new WasiShim(argv, env, stdin);
  const run = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi.imports });
  wasi.memory = run.exports.memory;
  let code = 0;
  try {
    run.exports._start();
  } catch (error) {
    if (!(error instanceof WasiExit)) throw error;
    code = error.code;
  }
  return { stdout: wasi.output(1), stderr: new TextDecoder().decode(wasi.output(2)), code };
}

class WasiExit extends Error {
  constructor(code) {
    super(`exit ${code}`);
    this.code = code;
  }
}

const ERRNO = { SUCCESS: 0, BADF: 8, INVAL: 28, NOSYS: 52, SPIPE: 70 };
const encoder = new TextEncoder();

/** The part of wasi_snapshot_preview1 a CGI program needs: args, environment, stdin, stdout,
 * stderr, clocks, random and exit. Files and sockets answer ENOSYS or EBADF. */
class WasiShim {
  memory = null;
  #args;
  #env;
  #stdin;
  #stdinOffset = 0;
  #out = { 1: [], 2: [] };

  constructor(argv, env, stdin) {
    this.#args = argv.map((a) => encoder.encode(`${a}\0`));
    this.#env = Object.entries(env).map(([k, v]) => encoder.encode(`${k}=${v}\0`));
    this.#stdin = stdin || new Uint8Array(0);
    const impl = {
      args_sizes_get: (count, size) => this.#sizes(this.#args, count, size),
      args_get: (pointers, buffer) => this.#strings(this.#args, pointers, buffer),
      environ_sizes_get: (count, size) => this.#sizes(this.#env, count, size),
      environ_get: (pointers, buffer) => this.#strings(this.#env, pointers, buffer),
      fd_write: (fd, iovs, count, written) => this.#write(fd, iovs, count, written),
      fd_read: (fd, iovs, count, read) => this.#read(fd, iovs, count, read),
      fd_fdstat_get: (fd, stat) => this.#fdstat(fd, stat),
      fd_close: (fd) => (fd <= 2 ? ERRNO.SUCCESS : ERRNO.BADF),
      fd_seek: (fd) => (fd <= 2 ? ERRNO.SPIPE : ERRNO.BADF),
      fd_prestat_get: () => ERRNO.BADF, // no preopened directories: no file system
      fd_prestat_dir_name: () => ERRNO.BADF,
      proc_exit: (code) => {
        throw new WasiExit(code);
      },
      clock_time_get: (id, precision, time) => this.#clock(id, time),
      clock_res_get: (id, resolution) => {
        this.#view().setBigUint64(resolution, 1000n, true);
        return ERRNO.SUCCESS;
      },
      random_get: (buffer, length) => {
        for (let done = 0; done < length; done += 65536) {
          crypto.getRandomValues(new Uint8Array(this.memory.buffer, buffer + done, Math.min(65536, length - done)));
        }
        return ERRNO.SUCCESS;
      },
      sched_yield: () => ERRNO.SUCCESS,
    };
    this.imports = new Proxy(impl, { get: (target, name) => target[name] ?? (() => ERRNO.NOSYS) });
  }

  output(fd) {
    const chunks = this.#out[fd];
    const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
    let offset = 0;
    for (const chunk of chunks) {
      out.set(chunk, offset);
      offset += chunk.length;
    }
    return out;
  }

  #view() {
    return new DataView(this.memory.buffer);
  }

  #sizes(items, count, size) {
    const view = this.#view();
    view.setUint32(count, items.length, true);
    view.setUint32(size, items.reduce((n, item) => n + item.length, 0), true);
    return ERRNO.SUCCESS;
  }

  #strings(items, pointers, buffer) {
    const view = this.#view();
    const bytes = new Uint8Array(this.memory.buffer);
    items.forEach((item, i) => {
      view.setUint32(pointers + 4 * i, buffer, true);
      bytes.set(item, buffer);
      buffer += item.length;
    });
    return ERRNO.SUCCESS;
  }

  #iovecs(iovs, count) {
    const view = this.#view();
    const list = [];
    for (let i = 0; i < count; i++) {
      list.push([view.getUint32(iovs + 8 * i, true), view.getUint32(iovs + 8 * i + 4, true)]);
    }
    return list;
  }

  #write(fd, iovs, count, written) {
    if (fd !== 1 && fd !== 2) return ERRNO.BADF;
    let total = 0;
    for (const [pointer, length] of this.#iovecs(iovs, count)) {
      this.#out[fd].push(new Uint8Array(this.memory.buffer, pointer, length).slice());
      total += length;
    }
    this.#view().setUint32(written, total, true);
    return ERRNO.SUCCESS;
  }

  #read(fd, iovs, count, read) {
    if (fd !== 0) return ERRNO.BADF;
    let total = 0;
    for (const [pointer, length] of this.#iovecs(iovs, count)) {
      const chunk = this.#stdin.subarray(this.#stdinOffset, this.#stdinOffset + length);
      new Uint8Array(this.memory.buffer, pointer, chunk.length).set(chunk);
      this.#stdinOffset += chunk.length;
      total += chunk.length;
      if (chunk.length < length) break;
    }
    this.#view().setUint32(read, total, true);
    return ERRNO.SUCCESS;
  }

  #fdstat(fd, stat) {
    if (fd > 2) return ERRNO.BADF;
    const view = this.#view();
    view.setUint8(stat, 2); // character device
    view.setUint16(stat + 2, 0, true);
    view.setBigUint64(stat + 8, 0xffffffffn, true);
    view.setBigUint64(stat + 16, 0xffffffffn, true);
    return ERRNO.SUCCESS;
  }

  #clock(id, time) {
    const now = id === 0 ? BigInt(Date.now()) * 1000000n : BigInt(Math.round(performance.now() * 1e6));
    this.#view().setBigUint64(time, now, true);
    return ERRNO.SUCCESS;
  }
}
