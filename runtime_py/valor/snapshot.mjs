// Makes the Pyodide memory snapshot that the browser's runtime worker boots from. `valor build`
// runs it with Node:
//   node snapshot.mjs PYODIDE_DIR RUNTIME_WHEEL KEY OUT [REQUIREMENTS_ZIP MODULES_JSON]
//
// The snapshot is the whole wasm heap after the runtime and every module it and the plug-in
// kinds import are imported (valor.snapshot.prepare), and with REQUIREMENTS_ZIP (the bundle's
// requirements, laid out as installed) the modules MODULES_JSON names, which the plug-ins import
// from them. No plug-in is loaded, no package is loaded with loadPackage (that breaks
// makeMemorySnapshot), and Python holds no JavaScript object.
//
// A compiled requirement's shared library (Pydantic's core) lives partly outside the heap: its
// code and its slots in the function table. So each is loaded before Python starts, in a fixed
// order, as a library linked with the program would be: its data then sits at the start of the
// heap, the same on every boot, and the browser loads the same libraries the same way before it
// restores the heap (valor-worker.js). OUT.json says which, in order, and their dlopen handles:
//   {"dynlibs": [path in site-packages, ...], "handles": {path: [handle, ...]}, "failed": [...]}
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [pyodideDir, wheel, key, out, requirementsZip, modulesJson] = process.argv.slice(2);
const requirements = requirementsZip ? readFileSync(requirementsZip) : null;
const modules = modulesJson ? JSON.parse(modulesJson) : [];
// Emscripten names the program after argv[1]; a browser says "./this.program". Otherwise the
// build machine's path would be frozen into sys.executable and $_.
process.argv[1] = "./this.program";
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const { default: createModule } = await import(pathToFileURL(`${pyodideDir}/pyodide.asm.mjs`).href);
let Module = null;
let dynlibs = [];
const TABLE_MARGIN = 64;
const tables = []; // the function table's size before each library: its slots start there
let sitePackages = null;
const pyodide = await loadPyodide({
  indexURL: `${pyodideDir}/`,
  _makeSnapshot: true,
  env: { LANG: "C.UTF-8" }, // the browser sets its own after restoring
  stdout: () => {},
  createPyodideModule: (settings) => {
    Module = settings;
    return createModule(settings);
  },
  fsInit: (FS, paths) => {
    sitePackages = paths.sitePackages;
    if (!requirements) return;
    const files = zipEntries(requirements);
    for (const [name, bytes] of files) {
      const path = `${sitePackages}/${name}`;
      FS.mkdirTree(path.slice(0, path.lastIndexOf("/")));
      FS.writeFile(path, bytes);
    }
    dynlibs = [...files.keys()].filter((name) => name.endsWith(".so")).sort();
    // The function table is a slot or so longer in a browser than here at this point (Pyodide
    // adds a function or two for its host): the libraries' slots start a little further on,
    // where the browser's boot pads its table to (valor-worker.js).
    if (dynlibs.length) {
      const table = Module.wasmTable;
      table.grow(Math.ceil((table.length + TABLE_MARGIN) / 256) * 256 - table.length);
    }
    for (const name of dynlibs) {
      const path = `${sitePackages}/${name}`;
      tables.push(Module.wasmTable.length);
      // What valor-worker.js's preloadDynlibs does, with the same arguments.
      const dso = Module.newDSO(path, undefined, "loading");
      dso.refcount = Infinity;
      dso.global = false;
      dso.exports = Module.loadWebAssemblyModule(files.get(name), { loadAsync: false }, path, {});
    }
  },
});
pyodide.FS.writeFile("/tmp/valor.whl", readFileSync(wheel));
const prepared = pyodide.runPython(`
import os, sysconfig, zipfile
zipfile.ZipFile("/tmp/valor.whl").extractall(sysconfig.get_paths()["purelib"])
os.remove("/tmp/valor.whl")
import valor.snapshot
valor.snapshot.prepare(${JSON.stringify(key)}, ${JSON.stringify(modules)})
`);
const failed = prepared.toJs();
prepared.destroy();
// The libraries' dlopen handles (pointers into the heap) name them in the browser as here.
const handles = {};
for (const [handle, { name }] of Object.entries(Module.LDSO.loadedLibsByHandle)) {
  if (Number(handle) === 0 || !name.startsWith(`${sitePackages}/`)) continue;
  (handles[name.slice(sitePackages.length + 1)] ??= []).push(Number(handle));
}
// Pyodide lists the packages it found installed in a JavaScript object, which a snapshot cannot
// hold; the browser's boot lists them again.
for (const name of Object.keys(pyodide.loadedPackages)) delete pyodide.loadedPackages[name];
writeFileSync(out, pyodide.makeMemorySnapshot());
writeFileSync(`${out}.json`, JSON.stringify({ dynlibs, tables, handles, failed }));

function zipEntries(archive) {
  // The build's stored (uncompressed) archive: its files' names and bytes.
  const view = new DataView(archive.buffer, archive.byteOffset, archive.byteLength);
  let end = archive.length - 22;
  while (end >= 0 && view.getUint32(end, true) !== 0x06054b50) end--;
  if (end < 0) throw new Error("not a zip archive");
  const names = new TextDecoder();
  const files = new Map();
  let entry = view.getUint32(end + 16, true);
  for (let count = view.getUint16(end + 10, true); count > 0; count--) {
    const method = view.getUint16(entry + 10, true);
    const size = view.getUint32(entry + 20, true);
    const nameLength = view.getUint16(entry + 28, true);
    const local = view.getUint32(entry + 42, true);
    const name = names.decode(archive.subarray(entry + 46, entry + 46 + nameLength));
    entry += 46 + nameLength + view.getUint16(entry + 30, true) + view.getUint16(entry + 32, true);
    if (name.endsWith("/")) continue;
    if (method !== 0) throw new Error(`${name} is compressed in its archive`);
    const start = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    files.set(name, archive.subarray(start, start + size));
  }
  return files;
}
