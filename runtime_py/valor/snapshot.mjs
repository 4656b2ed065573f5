// Makes the Pyodide memory snapshot that the browser's runtime worker boots from. `valor build`
// runs it with Node:
//   node snapshot.mjs PYODIDE_DIR RUNTIME_WHEEL KEY OUT [REQUIREMENTS_DIR MODULES_JSON]
//
// The snapshot is the whole wasm heap after the runtime and every module it and the plug-in
// kinds import are imported (valor.snapshot.prepare), and with REQUIREMENTS_DIR (the bundle's
// requirements.zip, unpacked by `valor build`: laid out as installed) the modules MODULES_JSON
// names, which the plug-ins import from them. No plug-in is loaded, no package is loaded with
// loadPackage (that breaks makeMemorySnapshot), and Python holds no JavaScript object.
//
// A compiled requirement's shared library (Pydantic's core) lives partly outside the heap: its
// code and its slots in the function table. So each is loaded before Python starts, in a fixed
// order, as a library linked with the program would be: its data then sits at the start of the
// heap, the same on every boot, and the browser loads the same libraries the same way before it
// restores the heap (valor-worker.js). OUT.json says which, in order, and their dlopen handles:
//   {"dynlibs": [path in site-packages, ...], "handles": {path: [handle, ...]}, "failed": [...]}
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [pyodideDir, wheel, key, out, requirementsDir, modulesJson] = process.argv.slice(2);
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
    if (!requirementsDir) return;
    const files = requirementFiles(requirementsDir);
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

function requirementFiles(dir) {
  // The unpacked requirements' files: name (relative, with "/") -> bytes.
  const files = new Map();
  for (const entry of readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = `${entry.parentPath ?? entry.path}/${entry.name}`;
    files.set(path.slice(dir.length + 1), readFileSync(path));
  }
  return files;
}
