// Makes the Pyodide memory snapshot that the browser's runtime worker boots from. `valor build`
// runs it with Node:  node snapshot.mjs PYODIDE_DIR RUNTIME_WHEEL KEY OUT
//
// The snapshot is the whole wasm heap after the runtime and every module it and the plug-in
// kinds import are imported (valor.snapshot.prepare). No plug-in is loaded, no package is loaded
// with loadPackage (that breaks makeMemorySnapshot), and Python holds no JavaScript object.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [pyodideDir, wheel, key, out] = process.argv.slice(2);
// Emscripten names the program after argv[1]; a browser says "./this.program". Otherwise the
// build machine's path would be frozen into sys.executable and $_.
process.argv[1] = "./this.program";
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const pyodide = await loadPyodide({
  indexURL: `${pyodideDir}/`,
  _makeSnapshot: true,
  env: { LANG: "C.UTF-8" }, // the browser sets its own after restoring
  stdout: () => {},
});
pyodide.FS.writeFile("/tmp/valor.whl", readFileSync(wheel));
pyodide.runPython(`
import os, sysconfig, zipfile
zipfile.ZipFile("/tmp/valor.whl").extractall(sysconfig.get_paths()["purelib"])
os.remove("/tmp/valor.whl")
import valor.snapshot
valor.snapshot.prepare(${JSON.stringify(key)})
`);
writeFileSync(out, pyodide.makeMemorySnapshot());
