"""``valor build``: bundle plug-ins, the runtime and Pyodide into a static site.

The site (page, service worker, runtime worker, Pyodide core, wheels, plug-ins) answers
``fetch()`` calls offline from any static web host, at the root or under ``--base``.
Slow steps (npm, pip) are cached, so a rerun only copies files.
"""

from __future__ import annotations

import argparse
import ast
import base64
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import protocol
from . import snapshot as snapshot_file
from .errors import ManifestError
from .kinds import KINDS, site_files
from .kinds.python.core import package_module
from .manifest import Manifest, PluginSpec, load_manifest
from .runtime import intercept_prefixes

PYODIDE_VERSION = "314.0.7"
# The WASI shim the browser's wasm executor runs WASI plug-ins on (pinned in package.json too).
WASI_SHIM = "@bjorn3/browser_wasi_shim"
WASI_SHIM_VERSION = "0.4.2"
PYODIDE_PYTHON = "3.14"
PYODIDE_FILES = (
    "pyodide.mjs",
    "pyodide.asm.mjs",
    "pyodide.asm.wasm",
    "python_stdlib.zip",
    "pyodide-lock.json",
)
# The site's own files: everything in web/ (page, runtime worker, browser loaders' helpers)
# and the service worker, from the repository or, when installed, from the package's static/.
SITE_FOLDERS = ("web", "sw")
# What the kinds' browser engines need on the site (the JS worker pool that both hosts run, Deno
# on the server): bundle name: file in the package.
KIND_FILES = site_files()
# The site's top-level names that the bundle writes itself: --include cannot replace them.
RESERVED_SITE_NAMES = frozenset(
    ["pyodide", "wheels", "plugins", "kinds", "valor-bundle.json", "snapshot.bin", "plugins.zip"]
)
BUILD_PLACEHOLDER = "/*__VALOR_BUILD__*/null"
# The scripts that speak the browser's message protocol: the build writes it into each (and
# the reason phrases, statuses without a body and error body they share with the runtime).
PROTOCOL_PLACEHOLDER = "/*__VALOR_PROTOCOL__*/null"
PROTOCOL_FILES = ("valor.js", "valor-sw.js", "valor-worker.js", "valor-snapshot.js")
SNAPSHOT_FILE = "snapshot.bin"
# The plug-ins' files in one archive, which the runtime worker fetches and unpacks at boot: one
# request instead of one per file (each costs the worker and the service worker a few ms).
FILES_ARCHIVE = "plugins.zip"
# The requirements' wheels unpacked as an installer lays them out, in one stored archive: the
# runtime worker copies it into site-packages as it does the runtime wheel, where loading an
# installer (micropip) and installing each wheel took seconds on every boot with FastAPI.
REQUIREMENTS_ARCHIVE = "requirements.zip"
SNAPSHOT_SCRIPT = "snapshot.mjs"  # run with Node; ships in the package
PRECOMPILE_SCRIPT = "precompile.mjs"  # the requirements' bytecode, with Node too
NODE_TIMEOUT = 300  # seconds for a Node step (the snapshot takes a few on a quiet machine)
SKIP_NAMES = {"__pycache__", "node_modules", "target", "build", "dist"}
PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent.parent


class BuildError(Exception):
    """A build that cannot go on; the message says what to do."""


@dataclass
class Bundle:
    """What the build wrote: the contents of ``valor-bundle.json``."""

    version: str = ""
    base: str = "/"
    manifest: str = "plugins/plugins.json"
    files: list[str] = field(default_factory=list)
    files_archive: str = FILES_ARCHIVE
    runtime_wheel: str = ""
    requirement_wheels: list[str] = field(default_factory=list)
    """The names of the wheels the requirements archive was made from (not in the site)."""
    requirements_archive: str | None = None
    """The requirement wheels' files, laid out as installed, in one stored archive, which the
    runtime worker writes into site-packages before Python starts (no installer at boot)."""
    assets: list[str] = field(default_factory=list)
    snapshot: dict[str, Any] | None = None
    """``{path, key, bytes, gzip_bytes}`` of the memory snapshot, or ``None`` without one."""
    snapshot_in_browser: bool = False
    """No snapshot could be made here (no Node): the browser makes one after its first boot."""
    fallback: str | None = None
    prefixes: list[str] = field(default_factory=list)
    """What the service worker intercepts from the start: the manifest's mounts and built-ins."""


class Progress:
    """One line per step: ``[2/8] Getting Pyodide ... done (cached in DIR) 0.4 s``, then its
    warnings."""

    def __init__(self, total: int, quiet: bool = False) -> None:
        self.total = total
        self.count = 0
        self.quiet = quiet
        self.warnings: list[str] = []

    @contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        self.count += 1
        notes: list[str] = []
        started = time.perf_counter()
        self._print(f"[{self.count}/{self.total}] {title} ...", end="")
        try:
            yield notes
        except BaseException:
            self._print(" failed")
            raise
        finally:
            warnings, self.warnings = self.warnings, []
        elapsed = time.perf_counter() - started
        suffix = f" ({', '.join(notes)})" if notes else ""
        self._print(f" done{suffix} {elapsed:.1f} s")
        for warning in warnings:
            self._print(f"  warning: {warning}")

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def _print(self, text: str, end: str = "\n") -> None:
        if not self.quiet:
            print(text, end=end, flush=True)


def main(argv: list[str] | None = None) -> int:
    """``valor build [MANIFEST] [--out dist] [--base /sub/path/] [--cache DIR]``."""
    parser = argparse.ArgumentParser(
        prog="valor build", description="Bundle plug-ins into a static site that runs offline."
    )
    parser.add_argument(
        "manifest",
        nargs="?",
        default="plugins/plugins.json",
        help="the plug-in manifest (JSON) to bundle (default: plugins/plugins.json)",
    )
    parser.add_argument("--out", default="dist", help="output folder, replaced (default: dist)")
    parser.add_argument(
        "--base", default="/", help="URL path the site is served under (default: /)"
    )
    parser.add_argument(
        "--cache", default=None, help="cache folder (default: $VALOR_CACHE, else ~/.cache/valor)"
    )
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument(
        "--no-snapshot",
        dest="snapshot",
        action="store_false",
        help="leave out the memory snapshot (the browser then boots Python from scratch)",
    )
    parser.add_argument(
        "--fallback",
        metavar="URL",
        default=None,
        help="a server host running the same manifest (valor serve --cors ORIGIN) that answers "
        "while this tab's runtime boots",
    )
    parser.add_argument(
        "--include",
        metavar="PATH",
        action="append",
        default=[],
        help="a page or file of your own (a folder: its files) to put in the site and keep for "
        "offline use with the bundle; repeatable",
    )
    parser.add_argument(
        "--site",
        metavar="DIR",
        default=None,
        help="the folder of your site's own pages and files (default: the manifest's \"site\"),"
        " served beside the runtime and kept for offline use; its index.html is the start page",
    )
    parser.add_argument("--serve", action="store_true", help="then serve the site on localhost")
    parser.add_argument("--host", default="127.0.0.1", help="with --serve (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="with --serve (default: 8080)")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        bundle = build(
            args.manifest,
            args.out,
            base=args.base,
            cache=args.cache,
            quiet=args.quiet,
            snapshot=args.snapshot,
            fallback=args.fallback,
            include=args.include,
            site=args.site,
        )
    except (BuildError, ManifestError) as exc:
        print(f"\nvalor build: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
        print(
            f"Built {args.out}/ for base {bundle.base} ({size / 1e6:.1f} MB, version "
            f"{bundle.version}) in {time.perf_counter() - started:.1f} s"
        )
    if args.serve:
        server = serve(args.out, bundle.base, args.host, args.port)
        print(f"Serving {args.out}/ at http://{args.host}:{server.server_port}{bundle.base}")
        print("Open that URL in a browser; press Ctrl+C to stop.")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
    return 0


def serve(folder: str | Path, base: str = "/", host: str = "127.0.0.1", port: int = 0) -> Any:
    """A static HTTP server for the site at ``base`` (``port=0`` picks a free port). Call
    ``serve_forever()`` on it, in a thread if needed."""
    from .static import StaticServer

    return StaticServer(Path(folder), _normalise_base(base), host, port)


def build(
    manifest_path: str | Path,
    out: str | Path,
    *,
    base: str = "/",
    cache: str | Path | None = None,
    quiet: bool = False,
    snapshot: bool = True,
    fallback: str | None = None,
    include: Iterable[str | Path] = (),
    site: str | Path | None = None,
) -> Bundle:
    """Build the site into ``out`` (replaced) and return what was written. ``snapshot`` makes
    the memory snapshot the browser boots from; ``fallback`` is the URL of a server host that
    answers while a tab's runtime boots; ``include`` adds the site's own pages and files (a
    file at the site's root, a folder's files at their paths inside it), kept for offline use
    with the rest (an ``index.html`` of yours replaces the demo page). ``site`` is the folder
    of the site's own pages (default: the manifest's ``"site"``), included as ``include``
    includes a folder."""
    own = _own_files(include)
    out = Path(out)
    cache_dir = Path(cache or os.environ.get("VALOR_CACHE") or _default_cache())
    bundle = Bundle(base=_normalise_base(base), fallback=_check_fallback(fallback))
    progress = Progress(total=7, quiet=quiet)

    with progress.step("Checking the manifest") as notes:
        manifest, specs = _check_manifest(Path(manifest_path), progress)
        notes.append(f"{len(specs)} plug-ins")
        # Every prefix, the left-out plug-ins' too: their requests get the runtime's answer
        # (a 503 naming why, or the fallback server's), never the static host's.
        bundle.prefixes = intercept_prefixes(
            bundle.base.rstrip("/"), [spec.prefix for spec in manifest.plugins], registry=True
        )
        own = {**_site_files(site, manifest), **own}  # --include's files win over the site's
    out.resolve().parent.mkdir(parents=True, exist_ok=True)  # --out a/b/c with no a/b yet
    staging = Path(tempfile.mkdtemp(prefix=".valor-build-", dir=out.resolve().parent))
    try:
        with progress.step(f"Getting Pyodide {PYODIDE_VERSION}") as notes:
            pyodide_dir = _copy_pyodide(cache_dir, staging, notes)
        with progress.step("Building the runtime wheel") as notes:
            wheel = _runtime_wheel(staging / "wheels")
            bundle.runtime_wheel = f"wheels/{wheel.name}"
            notes.append(wheel.name)
        with progress.step("Fetching plug-in requirements with pip") as notes:
            imports = _add_requirements(
                bundle, specs, cache_dir, pyodide_dir, staging, progress, notes
            )
        with progress.step("Making the memory snapshot with Node") as notes:
            if snapshot:
                requirements = (
                    staging / bundle.requirements_archive if bundle.requirements_archive else None
                )
                bundle.snapshot = _snapshot(
                    cache_dir, pyodide_dir, wheel, staging, progress, notes, requirements, imports
                )
                bundle.snapshot_in_browser = bundle.snapshot is None
                if bundle.snapshot:
                    size, packed = bundle.snapshot["bytes"], bundle.snapshot["gzip_bytes"]
                    notes.append(f"{size / 1e6:.1f} MB, {packed / 1e6:.1f} MB gzipped")
            else:
                notes.append("skipped: --no-snapshot")
        with progress.step("Copying plug-ins") as notes:
            bundle.files = _copy_plugins(manifest, specs, staging / "plugins", bundle.fallback)
            _archive(staging, bundle.files, staging / bundle.files_archive)
            notes.append(f"{len(bundle.files)} files")
        with progress.step("Writing the site") as notes:
            _write_site(staging, bundle, own)
            notes.append(f"version {bundle.version}")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return bundle


# -- steps ------------------------------------------------------------------------------------


def _copy_pyodide(cache_dir: Path, staging: Path, notes: list[str]) -> Path:
    """Pyodide's core and the WASI shim into the site; returns Pyodide's package folder."""
    pyodide_dir = _npm_package("pyodide", PYODIDE_VERSION, cache_dir, notes)
    for name in PYODIDE_FILES:
        _copy(pyodide_dir / name, staging / "pyodide" / name)
    # The step's note says where Pyodide came from; the shim comes the same way.
    shim_dir = _npm_package(WASI_SHIM, WASI_SHIM_VERSION, cache_dir, [])
    for path in sorted((shim_dir / "dist").glob("*.js")):
        _copy(path, staging / "kinds" / "wasi-shim" / path.name)
    return pyodide_dir


def _add_requirements(
    bundle: Bundle,
    specs: list[PluginSpec],
    cache_dir: Path,
    pyodide_dir: Path,
    staging: Path,
    progress: Progress,
    notes: list[str],
) -> list[str]:
    """The plug-ins' requirement wheels' files, laid out as installed (with bytecode when Node
    can compile it), into the requirements archive; their names into ``bundle``. Returns the
    modules the plug-ins import from them (for the memory snapshot)."""
    lock = json.loads((pyodide_dir / "pyodide-lock.json").read_text())
    platform = pyodide_platform(lock)
    chosen: dict[str, Path] = {}
    imports: list[str] = []
    for spec in specs:
        wheels = []
        if spec.requirements:
            requirements = list(spec.requirements)
            wheels = _pip_download(cache_dir, requirements, spec, notes, platform)
        for path in wheels:
            if path.name not in chosen:
                chosen[path.name] = path
                bundle.requirement_wheels.append(path.name)
        for name in _requirement_imports(spec, wheels):
            if name not in imports:
                imports.append(name)
        uncovered = _uncovered_imports(spec, wheels)
        if uncovered:
            progress.warn(
                f"plug-in {spec.name!r} imports {', '.join(uncovered)}, which neither"
                " its requirements nor Python's standard library provide: the browser"
                " will not have it (add it to 'requirements')"
            )
    # The wheels themselves stay out of the site: the runtime worker reads only the archive,
    # and a copy of each beside it doubled the requirements' share of the bundle and of the
    # service worker's precache.
    if chosen:
        entries = _installed(list(chosen.values()))
        entries.update(_bytecode(cache_dir, pyodide_dir, entries, progress, notes))
        _write_zip(staging / REQUIREMENTS_ARCHIVE, sorted(entries.items()))
        bundle.requirements_archive = REQUIREMENTS_ARCHIVE
    notes.append(f"{len(chosen)} wheels")
    return imports


def _check_manifest(path: Path, progress: Progress) -> tuple[Manifest, list[PluginSpec]]:
    if not path.is_file():
        raise BuildError(f"manifest {str(path)!r} not found")
    manifest = load_manifest(path)
    specs = []
    for spec in manifest.plugins:
        server_only = KINDS[spec.type].server_only
        if server_only:
            progress.warn(f"plug-in {spec.name!r} is left out: {server_only}")
            continue
        if spec.path is not None and not spec.path.exists():
            raise BuildError(f"plug-in {spec.name!r}: file {str(spec.path)!r} not found")
        for source in _python_sources(spec):
            _compile(spec, source)
        specs.append(spec)
    return manifest, specs


def _python_sources(spec: PluginSpec) -> list[Path]:
    """A python or asgi plug-in's Python files: its module, or its whole package."""
    if spec.type not in ("python", "asgi") or spec.path is None or not spec.path.is_file():
        return []
    top = _package_folder(spec)
    return sorted(top.rglob("*.py")) if top is not None else [spec.path]


def _compile(spec: PluginSpec, source: Path) -> None:
    """Refuse a plug-in whose Python does not compile: the browser would only say so at boot."""
    try:
        compile(source.read_bytes(), str(source), "exec", dont_inherit=True)
    except SyntaxError as exc:
        raise BuildError(
            f"plug-in {spec.name!r}: syntax error in {source} line {exc.lineno}: {exc.msg}"
        ) from None
    except ValueError as exc:  # a NUL byte
        raise BuildError(f"plug-in {spec.name!r}: {source} cannot be compiled: {exc}") from None


def _uncovered_imports(spec: PluginSpec, wheels: list[Path]) -> list[str]:
    """The modules a plug-in's Python files import that the browser will not have: not in
    Python's standard library, not beside the plug-in, not in its requirements' wheels
    (dependencies included), as ``name (file:line)``."""
    if spec.path is None:
        return []
    found = []
    provided = {"valor", "js", "pyodide", "pyodide_js"} | _provided(wheels)  # Pyodide's own
    top_package = _package_folder(spec)
    folders = {spec.path.parent, *([top_package.parent] if top_package else [])}
    beside = {path.stem for folder in folders for path in folder.iterdir()}
    for name, source, line in _imports(spec):
        top = name.split(".", 1)[0]
        if top in sys.stdlib_module_names or top in provided or top in beside:
            continue
        found.append(f"{top} ({source.name}:{line})")
    return found


def _requirement_imports(spec: PluginSpec, wheels: list[Path]) -> list[str]:
    """The modules a plug-in's Python files import from its requirements' wheels."""
    provided = _provided(wheels)
    names = [name for name, _, _ in _imports(spec) if name.split(".", 1)[0] in provided]
    return list(dict.fromkeys(names))


def _provided(wheels: list[Path]) -> set[str]:
    """The top-level modules the wheels install."""
    provided = set()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                top = name.split("/", 1)[0]
                if not top.endswith((".dist-info", ".data")):
                    provided.add(top.removesuffix(".py"))
    return provided


def _imports(spec: PluginSpec) -> Iterator[tuple[str, Path, int]]:
    """The absolute imports in a plug-in's Python files: ``(module, file, line)``."""
    for source in _python_sources(spec):
        tree = ast.parse(source.read_bytes(), str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name, source, node.lineno
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                yield node.module, source, node.lineno


def _check_fallback(url: str | None) -> str | None:
    if url is None:
        return None
    if not re.match(r"^https?://[^/?#\s]+(/[^?#\s]*)?$", url):
        raise BuildError(f"--fallback must be an http(s) URL like http://host:8000/, got {url!r}")
    return url if url.endswith("/") else url + "/"


def _snapshot(
    cache_dir: Path,
    pyodide_dir: Path,
    wheel: Path,
    staging: Path,
    progress: Progress,
    notes: list[str],
    requirements: Path | None = None,
    imports: list[str] | None = None,
) -> dict[str, Any] | None:
    """Make the memory snapshot with Node (cached by Pyodide, runtime wheel, script and
    requirements): with ``requirements`` (the archive) it holds ``imports`` too, the modules the
    plug-ins import from them. Without Node, or when it fails, warn and leave it out: the
    browser then boots as without one. When only the requirements' part fails, the snapshot
    holds the runtime alone and the plug-ins import them at boot."""
    script = PACKAGE_DIR / SNAPSHOT_SCRIPT
    digest = hashlib.sha256(PYODIDE_VERSION.encode() + wheel.read_bytes() + script.read_bytes())
    digest.update(snapshot_file.MAGIC)  # the cache holds it packed
    extra: list[str] = []
    if requirements is not None:
        modules = json.dumps(imports or [])
        digest.update(hashlib.sha256(requirements.read_bytes()).digest() + modules.encode())
        extra = [modules]
    key = digest.hexdigest()[:16]
    cached = cache_dir / "snapshots" / f"{key}.bin"
    meta_file = cached.with_suffix(".json")
    if not cached.exists():
        node = shutil.which("node")
        if node is None:
            progress.warn(
                "Node.js is not installed: no memory snapshot in the bundle; each browser makes"
                " one after its first boot (which is slower)"
            )
            return None
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_suffix(".partial")
        command = [node, str(script), str(pyodide_dir.resolve()), str(wheel), key, str(partial)]
        with tempfile.TemporaryDirectory(prefix="valor-requirements-") as unpacked:
            if requirements is not None:
                with zipfile.ZipFile(requirements) as archive:
                    archive.extractall(unpacked)
                extra.insert(0, unpacked)
            failure = _run_node([*command, *extra])
        made = Path(f"{partial}.json")
        if failure is not None:
            partial.unlink(missing_ok=True)
            made.unlink(missing_ok=True)
            if requirements is not None:
                progress.warn(
                    "the memory snapshot holds the runtime only (the plug-ins import their"
                    f" requirements at boot): node {SNAPSHOT_SCRIPT} failed: {failure}"
                )
                return _snapshot(cache_dir, pyodide_dir, wheel, staging, progress, notes)
            progress.warn(
                f"no memory snapshot in the bundle (each browser makes one after its first"
                f" boot): node {SNAPSHOT_SCRIPT} failed: {failure}"
            )
            return None
        packed = snapshot_file.pack(partial.read_bytes())
        partial.write_bytes(packed)
        gzipped = len(gzip.compress(packed, compresslevel=6))
        cached.with_suffix(".gzip-size").write_text(str(gzipped))
        made.replace(meta_file) if made.exists() else meta_file.write_text("{}")
        partial.rename(cached)
    else:
        notes.append("cached")
    _copy(cached, staging / SNAPSHOT_FILE)
    size_file = cached.with_suffix(".gzip-size")
    packed = int(size_file.read_text()) if size_file.exists() else 0
    info = {"path": SNAPSHOT_FILE, "key": key, "bytes": cached.stat().st_size, "gzip_bytes": packed}
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
    if imports and requirements is not None:
        failed = meta.get("failed", [])
        held = [name for name in imports if name not in failed]
        notes.append(f"{len(held)} modules of the requirements in it")
        # The compiled requirements' libraries, loaded before the heap is restored, in order.
        info.update(modules=held, **{k: meta.get(k, []) for k in ("dynlibs", "tables")})
        info["handles"] = meta.get("handles", {})
    return info


def _npm_package(name: str, version: str, cache_dir: Path, notes: list[str]) -> Path:
    """An npm package (Pyodide, the WASI shim): the repository's pinned copy, else a cached
    install, else one npm installs into the cache; ``notes`` says which."""
    prefix = cache_dir / f"{name.replace('/', '+')}-{version}"
    for candidate, where in (
        (REPO_DIR / "node_modules" / name, "from"),
        (prefix / "node_modules" / name, "cached in"),
    ):
        if _package_version(candidate) == version:
            notes.append(f"{where} {candidate}")
            return candidate
    npm = shutil.which("npm")
    if npm is None:
        raise BuildError(
            "npm is not installed: install Node.js (with npm), or run scripts/install-browser.sh"
        )
    prefix.mkdir(parents=True, exist_ok=True)
    _run(
        [npm, "install", "--prefix", str(prefix), "--no-save", "--no-audit", "--no-fund",
         f"{name}@{version}"],
        f"npm could not fetch {name}",
    )  # fmt: skip
    candidate = prefix / "node_modules" / name
    if _package_version(candidate) != version:
        raise BuildError(f"npm did not install {name} {version} into {prefix}")
    notes.append(f"installed with npm into {candidate}")
    return candidate


def _runtime_wheel(folder: Path) -> Path:
    """A pure-Python wheel of the ``valor`` package being run, written by hand: no build
    backend, no network, byte-identical for identical sources."""
    from . import __version__

    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"valor-{__version__}-py3-none-any.whl"
    info = f"valor-{__version__}.dist-info"
    entries: list[tuple[str, bytes]] = []
    for path in sorted(PACKAGE_DIR.rglob("*")):
        relative = path.relative_to(PACKAGE_DIR)
        if path.is_dir() or "__pycache__" in relative.parts or path.suffix == ".pyc":
            continue
        if relative.parts[0] == "static":
            continue  # the site's own files, already in the bundle
        entries.append((f"valor/{relative.as_posix()}", path.read_bytes()))
    entries.append((f"{info}/METADATA", _metadata(__version__).encode()))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: valor-build\n"
                    b"Root-Is-Purelib: true\nTag: py3-none-any\n"))  # fmt: skip
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in entries]
    record.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    _write_zip(wheel, entries)
    return wheel


def pyodide_platform(lock: dict[str, Any]) -> str:
    """The wheel platform tag of Pyodide's compiled packages (``pyemscripten_2026_0_wasm32``),
    from the ``abi_version`` and ``arch`` in its lock file."""
    info = lock.get("info", {})
    return f"pyemscripten_{info.get('abi_version', '2026_0')}_{info.get('arch', 'wasm32')}"


def _pip_download(
    cache_dir: Path,
    requirements: list[str],
    spec: PluginSpec,
    notes: list[str],
    platform: str | None = None,
) -> list[Path]:
    """Wheels for Pyodide's Python, dependencies included, cached by request: pure-Python ones,
    or, with ``platform``, ones compiled for Pyodide where a package has no pure wheel."""
    request = json.dumps(sorted(requirements)) + (f" for {platform}" if platform else "")
    key = hashlib.sha256(request.encode()).hexdigest()[:16]
    folder = cache_dir / "wheels" / f"py{PYODIDE_PYTHON}-{key}"
    done = folder / ".complete"
    if done.exists():
        if "cached" not in notes:
            notes.append("cached")
        return [folder / name for name in done.read_text().split()]
    _require_pip()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    cp = "cp" + PYODIDE_PYTHON.replace(".", "")
    tags = ["--platform", "any", "--implementation", "py", "--abi", "none"]
    if platform is not None:
        # pip prefers the most specific wheel: a compiled one for Pyodide, else a pure one.
        tags = ["--platform", platform, "--platform", "any", "--implementation", "cp",
                "--abi", cp, "--abi", "abi3", "--abi", "none"]  # fmt: skip
    command = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--quiet",
        "--only-binary=:all:", *tags, "--python-version", PYODIDE_PYTHON,
        "--dest", str(folder), *requirements,
    ]  # fmt: skip
    owner = f"plug-in {spec.name!r}: "
    try:
        _run(command, f"{owner}pip could not download {', '.join(requirements)}")
    except BuildError as exc:
        missing = re.search(r"No matching distribution found for (\S+)", str(exc))
        if missing:
            compiled = f" nor a wheel built for Pyodide ({platform}, {cp})" if platform else ""
            raise BuildError(
                f"{owner}requirement {missing.group(1)!r} has no pure-Python wheel{compiled} "
                f"for Python {PYODIDE_PYTHON} on the package index (or no such package "
                "exists); the browser installs only such wheels, from the bundle"
            ) from None
        raise
    wheels = sorted(folder.glob("*.whl"))
    foreign = [w.name for w in wheels if not _runs_in_pyodide(w.name, platform)]
    if foreign:
        raise BuildError(f"{owner}{', '.join(foreign)} is not a wheel Pyodide can install")
    done.write_text("\n".join(w.name for w in wheels))
    return wheels


def _runs_in_pyodide(wheel: str, platform: str | None) -> bool:
    return wheel.endswith("-none-any.whl") or (
        platform is not None and wheel.endswith(f"-{platform}.whl")
    )


def _copy_plugins(
    manifest: Manifest, specs: list[PluginSpec], folder: Path, fallback: str | None
) -> list[str]:
    """The manifest's folder (so ``POST /_plugins`` can mount any file shipped in it), plus
    plug-in files from elsewhere, and the browser's manifest with paths relative to it. A
    plug-in the browser cannot run stays in it as a stand-in: a proxy to the ``fallback``
    server's same prefix, or without one its own entry, which the browser host refuses to
    load with the reason (a 503 at its prefix, listed in ``/_health``)."""
    base_dir = manifest.base_dir
    for path in _walk(base_dir):
        _copy(path, folder / path.relative_to(base_dir))
    entries = []
    for spec in manifest.plugins:
        if spec not in specs:
            entries.append(_stand_in(spec, fallback))
            continue
        entry = dict(spec.source)
        if spec.path is not None:
            if spec.path.is_relative_to(base_dir):
                relative = spec.path.relative_to(base_dir).as_posix()
                # Also when the walk skipped its folder (a build/ output, for instance).
                sources = _walk(spec.path) if spec.path.is_dir() else [spec.path]
                for path in sources:
                    _copy(path, folder / path.relative_to(base_dir))
            else:
                # A module in a package comes with its whole package, for its imports.
                top = _package_folder(spec)
                above = top.parent if top is not None else spec.path.parent
                relative = f"_external/{spec.name}/{spec.path.relative_to(above).as_posix()}"
                if top is not None:
                    sources = _walk(top)
                else:
                    sources = _walk(spec.path) if spec.path.is_dir() else [spec.path]
                for path in sources:
                    inside = path.relative_to(above)
                    _copy(path, folder / "_external" / spec.name / inside)
            entry["path"] = relative
        entries.append(entry)
    (folder / "plugins.json").write_text(json.dumps({"plugins": entries}, indent=2) + "\n")
    # Every file copied, build/ outputs included: the runtime worker loads exactly these.
    copied = (p for p in folder.rglob("*") if p.is_file())
    return sorted(f"plugins/{p.relative_to(folder).as_posix()}" for p in copied)


def _package_folder(spec: PluginSpec) -> Path | None:
    """The top package folder of a plug-in's module, if it is in one."""
    assert spec.path is not None
    module, colon, _ = spec.source.get("app", "").rpartition(":")
    dotted = module if colon else package_module(spec.path)
    if not dotted:
        return None
    depth = dotted.count(".") + (1 if spec.path.name == "__init__.py" else 0)
    return spec.path.parents[depth - 1] if depth else None


def _stand_in(spec: PluginSpec, fallback: str | None) -> dict[str, Any]:
    """The browser's entry for a plug-in left out of the bundle."""
    entry: dict[str, Any] = {"name": spec.name, "prefix": spec.prefix, "timeout": spec.timeout}
    if fallback is not None:
        return {**entry, "type": "proxy", "url": fallback.rstrip("/") + spec.prefix}
    return {**entry, "type": spec.type, "path": spec.source.get("path", "")}


def _archive(folder: Path, files: list[str], target: Path) -> None:
    """``files`` (paths below ``folder``) in a zip archive."""
    _write_zip(target, ((name, (folder / name).read_bytes()) for name in files))


def _installed(wheels: list[Path]) -> dict[str, bytes]:
    """The wheels' files as installed in site-packages, ``{path: bytes}``: each wheel's
    entries as they are, a ``NAME.data/purelib`` or ``platlib`` folder's at the top (its
    scripts and headers left out); the first wheel to hold a path wins."""
    entries: dict[str, bytes] = {}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                if info.is_dir():
                    continue
                parts = info.filename.split("/")
                if parts[0].endswith(".data"):
                    if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                        continue
                    parts = parts[2:]
                entries.setdefault("/".join(parts), archive.read(info))
    return entries


def _bytecode(
    cache_dir: Path,
    pyodide_dir: Path,
    entries: dict[str, bytes],
    progress: Progress,
    notes: list[str],
) -> dict[str, bytes]:
    """The ``__pycache__`` files of ``entries``' modules, compiled by Pyodide's Python under
    Node (cached by Pyodide, files and script): a tab imports them without compiling source.
    Without Node, or when it fails, a warning and none: the browser compiles at import."""
    script = PACKAGE_DIR / PRECOMPILE_SCRIPT
    digest = hashlib.sha256(PYODIDE_VERSION.encode() + script.read_bytes())
    for name, data in sorted(entries.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    cached = cache_dir / "bytecode" / f"{digest.hexdigest()[:16]}.zip"
    if not cached.exists():
        node = shutil.which("node")
        if node is None:
            progress.warn("Node.js is not installed: the requirements ship without bytecode")
            return {}
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as work:
            source = Path(work) / "site.zip"
            _write_zip(source, sorted(entries.items()))
            partial = cached.with_suffix(".partial")
            command = [node, str(script), str(pyodide_dir.resolve()), str(source), str(partial)]
            failure = _run_node(command)
            if failure is not None:
                progress.warn(f"the requirements ship without bytecode: node failed: {failure}")
                partial.unlink(missing_ok=True)
                return {}
            partial.rename(cached)
    with zipfile.ZipFile(cached) as archive:
        compiled = {info.filename: archive.read(info) for info in archive.infolist()}
    notes.append(f"{len(compiled)} modules compiled")
    return compiled


def _write_zip(target: Path, entries: Iterable[tuple[str, bytes]]) -> None:
    """A zip archive of ``(name, data)`` entries, byte-identical for identical entries (one
    fixed date). Stored, not compressed: the runtime worker copies the files out in JavaScript
    (``unzip`` in valor-worker.js)."""
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)


def _own_files(include: Iterable[str | Path]) -> dict[str, Path]:
    """The site's own files to add: ``{name in the site: source}``."""
    own: dict[str, Path] = {}
    for given in include:
        source = Path(given)
        if source.is_dir():
            own.update({p.relative_to(source).as_posix(): p for p in _walk(source)})
        elif source.is_file():
            own[source.name] = source
        else:
            raise BuildError(f"--include {str(given)!r}: no such file or folder")
    return own


def _site_files(site: str | Path | None, manifest: Manifest) -> dict[str, Path]:
    """The site folder's files (``--site``, else the manifest's ``"site"``): ``{name: source}``."""
    folder = Path(site) if site is not None else manifest.site
    if folder is None:
        return {}
    if not folder.is_dir():
        given = "--site" if site is not None else 'the manifest\'s "site"'
        raise BuildError(f"{given} {str(folder)!r}: no such folder")
    return _own_files([folder])


def _write_site(staging: Path, bundle: Bundle, own: dict[str, Path] | None = None) -> None:
    for name in SITE_FOLDERS:
        source = _site_folder(name)
        for path in _walk(source):
            _copy(path, staging / path.relative_to(source))
    constants = protocol.browser_constants()
    for name in PROTOCOL_FILES:
        _fill_placeholder(staging / name, PROTOCOL_PLACEHOLDER, constants)
    for name, source in KIND_FILES.items():
        _copy(PACKAGE_DIR / source, staging / name)
    for name, source in (own or {}).items():
        target = staging / name
        top = name.split("/", 1)[0]
        if name != "index.html" and (target.exists() or top in RESERVED_SITE_NAMES):
            raise BuildError(f"--include: {name!r} would replace the bundle's own {top!r}")
        _copy(source, target)
    # Every file written, build/ outputs of plug-ins included: the service worker keeps them all
    # (the plug-ins' files too: the runtime worker takes them from plugins.zip, but a js
    # plug-in's workers import its script by URL).
    written = (p for p in staging.rglob("*") if p.is_file())
    bundle.assets = sorted(p.relative_to(staging).as_posix() for p in written)
    bundle.assets.append("valor-bundle.json")
    digest = hashlib.sha256()
    for name in bundle.assets[:-1]:
        digest.update(name.encode() + b"\0" + (staging / name).read_bytes())
    digest.update(bundle.base.encode())
    bundle.version = digest.hexdigest()[:12]
    info = {
        "version": bundle.version,
        "base": bundle.base,
        "manifest": bundle.manifest,
        "files": bundle.files,
        "files_archive": bundle.files_archive,
        "runtime_wheel": bundle.runtime_wheel,
        "requirement_wheels": bundle.requirement_wheels,
        "requirements_archive": bundle.requirements_archive,
        "assets": bundle.assets,
        "snapshot": bundle.snapshot,
        "snapshot_in_browser": bundle.snapshot_in_browser,
        "fallback": bundle.fallback,
        "prefixes": bundle.prefixes,
    }
    (staging / "valor-bundle.json").write_text(json.dumps(info, indent=2) + "\n")
    # The page and the service worker carry the build they belong to, to detect a stale one.
    stamp = {
        "version": bundle.version,
        "base": bundle.base,
        "assets": bundle.assets,
        "fallback": bundle.fallback,
        "prefixes": bundle.prefixes,
    }
    for name in ("valor.js", "valor-sw.js"):
        _fill_placeholder(staging / name, BUILD_PLACEHOLDER, stamp)


def _fill_placeholder(target: Path, placeholder: str, value: Any) -> None:
    """Write ``value`` as JSON in place of ``placeholder`` in the site file ``target``."""
    if not target.is_file():
        missing = f"the site file {target.name!r} is missing from this installation of valor"
        raise BuildError(missing)
    text = target.read_text()
    if placeholder not in text:
        raise BuildError(f"{target.name} has no {placeholder} placeholder")
    target.write_text(text.replace(placeholder, json.dumps(value)))


# -- helpers ----------------------------------------------------------------------------------


def _site_folder(name: str) -> Path:
    """A folder of site files: the repository's when run from a checkout, else the package's."""
    for folder in (REPO_DIR / name, PACKAGE_DIR / "static" / name):
        if folder.is_dir():
            return folder
    raise BuildError(f"the site folder {name!r} is missing from this installation of valor")


def _walk(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_NAMES and not d.startswith("."))
        found.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
    return found


def _copy(source: Path, target: Path) -> None:
    # A copy, not a link: editing the site must never change the sources or the cache.
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _run_node(command: list[str]) -> str | None:
    """Run a Node script of the build: ``None`` once it succeeded, else why it failed (the end
    of its output, or that it timed out)."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=NODE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "timed out"
    if result.returncode == 0:
        return None
    return (result.stderr or result.stdout).strip()[-600:]


def _run(command: list[str], failure: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()[-15:]
        raise BuildError(f"{failure}:\n    " + "\n    ".join(output))


def _require_pip() -> None:
    probe = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True)
    if probe.returncode != 0:
        raise BuildError(
            f"pip is not available for {sys.executable}: install it (python -m ensurepip) "
            "or run scripts/install-browser.sh"
        )


def _package_version(folder: Path) -> str | None:
    try:
        return json.loads((folder / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def _normalise_base(base: str) -> str:
    if not base.startswith("/") or "?" in base or "#" in base or "//" in base:
        raise BuildError(f"--base must be a URL path like /sub/path/, got {base!r}")
    return "/" + base.strip("/") + "/" if base.strip("/") else "/"


def _metadata(version: str) -> str:
    return f"Metadata-Version: 2.1\nName: valor\nVersion: {version}\n"


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _default_cache() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "valor"
