// Runs one wasm or WASI plug-in in the browser, in its own dedicated worker so the runtime can
// terminate it when a request runs past its timeout (an endless loop cannot be interrupted any
// other way). Only the engine: it compiles, instantiates and calls. The wasm ABI (which exports
// to call, with what, and what the answer means), the memory cap (set in the module's bytes) and
// CGI stay in Python (valor.kinds.wasm.core, valor.kinds.wasm.limits, valor.kinds.wasi.cgi). WASI
// calls are answered by @bjorn3/browser_wasi_shim (pinned in package.json, bundled by
// valor build into kinds/wasi-shim/): arguments, environment, stdin, stdout, stderr, clocks,
// random and exit; its in-memory file system starts empty (no preopened folders).
//
// In:  {type: "load", mode: "wasm" | "wasi", bytes}   -> {type: "loaded", imports, exports} | {type: "error", error}
//      {type: "call", id, op, args}           (wasm)  -> {id, value, size} | {id, error, trap}
//        op: "start" (a new instance) | "call" [export, ...args] | "write" [ptr, bytes]
//            | "read" [ptr, len] | "size" []; an i64 result comes back as text; size is the
//            memory's size in bytes after the step
//      {type: "call", id, argv, env, stdin}   (wasi)  -> {id, stdout, stderr, code} | {id, error, trap}

let mode = null;
let shim = null; // the WASI shim's module, imported for WASI plug-ins only
let module = null;
let instance = null; // wasm kind: the one Python started, until a step fails

self.onmessage = async ({ data }) => {
  if (data.type === "load") {
    try {
      mode = data.mode;
      // Only a WASI plug-in needs the shim: its eight modules would slow every wasm one's start.
      if (mode === "wasi") shim = await import("./wasi-shim/index.js");
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
      if (instance) answer.size = instance.exports.memory.buffer.byteLength;
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
  const stdout = [];
  const stderr = [];
  const fds = [
    new shim.OpenFile(new shim.File(stdin || new Uint8Array(0), { readonly: true })),
    new shim.ConsoleStdout((bytes) => stdout.push(bytes)),
    new shim.ConsoleStdout((bytes) => stderr.push(bytes)),
  ];
  const environ = Object.entries(env).map(([name, value]) => `${name}=${value}`);
  const wasi = new shim.WASI(argv, environ, fds, { debug: false });
  const run = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi.wasiImport });
  const code = wasi.start(run); // the exit code; a trap throws
  return { stdout: joined(stdout), stderr: new TextDecoder().decode(joined(stderr)), code };
}

function joined(chunks) {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}
