// Compiles the requirements' Python files to bytecode for Pyodide's own Python, so the browser
// imports them without compiling their source on every boot (a tab's file system is new each
// time, and FastAPI with Pydantic is hundreds of modules). `valor build` runs it with Node:
//   node precompile.mjs PYODIDE_DIR IN_ZIP OUT_ZIP
// IN_ZIP holds files as laid out in site-packages; OUT_ZIP gets each module's
// __pycache__/NAME.cpython-3XX.pyc, as unchecked-hash files: Python uses them without comparing
// them to the source's time, which on the browser's file system is the boot's.
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

const [pyodideDir, input, output] = process.argv.slice(2);
process.argv[1] = "./this.program";
const { loadPyodide } = await import(pathToFileURL(`${pyodideDir}/pyodide.mjs`).href);
const pyodide = await loadPyodide({ indexURL: `${pyodideDir}/`, stdout: () => {} });
pyodide.FS.writeFile("/tmp/in.zip", readFileSync(input));
pyodide.runPython(`
import compileall, os, py_compile, zipfile
zipfile.ZipFile("/tmp/in.zip").extractall("/tmp/site")
compileall.compile_dir(
    "/tmp/site", quiet=2, invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH
)
with zipfile.ZipFile("/tmp/out.zip", "w") as out:
    for root, _, files in sorted(os.walk("/tmp/site")):
        if os.path.basename(root) == "__pycache__":
            for name in sorted(files):
                path = os.path.join(root, name)
                out.write(path, os.path.relpath(path, "/tmp/site"))
`);
writeFileSync(output, pyodide.FS.readFile("/tmp/out.zip"));
