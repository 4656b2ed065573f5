// Makes the memory snapshot in this browser, for a bundle built without Node (valor-bundle.json
// says `snapshot_in_browser`). The runtime worker starts this module worker after its first
// boot; it does what `valor build` does with Node (snapshot.mjs), then keeps the snapshot with
// the build's files in Cache Storage, where the next boot finds it. This Pyodide never serves
// requests: making a snapshot leaves its JavaScript globals wrapped, which breaks the js, wasm
// and WASI kinds ("Illegal invocation"). It is thrown away once the snapshot is kept.
//
// From the runtime worker:  {base, version, key, runtimeWheel, cacheName, url}
// To the runtime worker:    KEPT {bytes} | FAILED {error} (valor/protocol.py, written in by the build)

const PROTOCOL = /*__VALOR_PROTOCOL__*/null;
if (!PROTOCOL) throw new Error("valor-snapshot.js is the unbuilt source: serve the output of valor build");
const TYPE = PROTOCOL.types;

self.onmessage = async ({ data }) => {
  try {
    const bytes = await make(data);
    self.postMessage({ type: TYPE.KEPT, bytes });
  } catch (error) {
    self.postMessage({ type: TYPE.FAILED, error: String(error?.message ?? error) });
  }
};

async function make({ base, version, key, runtimeWheel, cacheName, url }) {
  const { loadPyodide } = await import(`${base}pyodide/pyodide.mjs`);
  const [pyodide, wheel] = await Promise.all([
    loadPyodide({ indexURL: `${base}pyodide/`, _makeSnapshot: true, stdout: () => {} }),
    fetch(`${base}${runtimeWheel}?v=${version}`).then((r) => {
      if (!r.ok) throw new Error(`${runtimeWheel} answered ${r.status}`);
      return r.arrayBuffer();
    }),
  ]);
  pyodide.FS.writeFile("/tmp/valor.whl", new Uint8Array(wheel));
  pyodide.runPython(`
import os, sysconfig, zipfile
zipfile.ZipFile("/tmp/valor.whl").extractall(sysconfig.get_paths()["purelib"])
os.remove("/tmp/valor.whl")
import valor.snapshot
valor.snapshot.prepare(${JSON.stringify(key)})
`);
  const packed = pack(pyodide.makeMemorySnapshot());
  const cache = await caches.open(cacheName);
  await cache.put(url, new Response(packed, { headers: { "content-type": "application/octet-stream" } }));
  return packed.length;
}

function pack(heap) {
  // The layout of valor/snapshot.py's pack(): the heap without its pages of zeros.
  const PAGE = 64 * 1024;
  const count = Math.ceil(heap.length / PAGE);
  const stored = new Uint8Array(count);
  let size = 20 + count;
  for (let index = 0; index < count; index++) {
    const end = Math.min((index + 1) * PAGE, heap.length);
    for (let at = index * PAGE; at < end; at++) {
      if (heap[at] !== 0) {
        stored[index] = 1;
        size += end - index * PAGE;
        break;
      }
    }
  }
  const packed = new Uint8Array(size);
  const view = new DataView(packed.buffer);
  packed.set(new TextEncoder().encode("VALORSN1"));
  [heap.length, PAGE, count].forEach((value, i) => view.setUint32(8 + 4 * i, value, true));
  packed.set(stored, 20);
  let to = 20 + count;
  for (let index = 0; index < count; index++) {
    if (!stored[index]) continue;
    const page = heap.subarray(index * PAGE, Math.min((index + 1) * PAGE, heap.length));
    packed.set(page, to);
    to += page.length;
  }
  return packed;
}
