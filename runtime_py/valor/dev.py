"""``valor dev``: both hosts side by side, rebuilt and reloaded on every change.

    valor dev plugins/plugins.json

builds the bundle and serves it (the browser host, with the demo page) on ``--port``, runs
``valor serve`` (the server host) on ``--server-port``, and watches the manifest's folder: on a
change it recompiles C plug-ins and Rust crates whose sources changed, rebuilds the bundle,
restarts the server and reloads open demo pages. On the site,
``/_server/...`` is the server host through a same-origin proxy, so the demo page at
``/?server=/_server/`` can send each request to either host.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .manifest import load_manifest
from .processes import stop_process
from .static import MIME_TYPES
from .store.errors import StoreError
from .store.urls import default_url, sqlite_path

SERVER_PATH = "/_server/"
DEV_PATH = "/_dev/"
# Polls the dev server and reloads the page when a rebuild lands. Injected into index.html.
RELOAD_JS = """\
let seen = null;
async function poll() {
  try {
    const { version } = await (await fetch("/_dev/version", { cache: "no-store" })).json();
    if (seen !== null && version !== seen) return reload();
    seen = version;
  } catch { /* the dev server is restarting */ }
  setTimeout(poll, 500);
}
async function reload() {
  // Start from a fresh service worker: an updated one can stay waiting after a reload.
  for (const registration of await navigator.serviceWorker.getRegistrations()) {
    await registration.unregister();
  }
  location.reload();
}
poll();
"""
RELOAD_TAG = b'<script type="module" src="/_dev/reload.js"></script>'
# Hop-by-hop headers describe one connection, not the message: never forwarded.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "content-length",
    "host",
}


class ServerProcess:
    """``valor serve`` in a subprocess, restarted after each rebuild; its log goes to ours."""

    def __init__(self, manifest: Path, host: str, port: int) -> None:
        self.command = [
            sys.executable, "-m", "valor.cli", "serve", str(manifest),
            "--host", host, "--port", str(port),
        ]  # fmt: skip
        self.address = (host, port)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process)

    def restart(self) -> None:
        self.stop()
        self.start()


class DevHandler(http.server.SimpleHTTPRequestHandler):
    """The bundle's files, ``/_server/`` proxied to the server host, and ``/_dev/`` for reloads."""

    extensions_map = MIME_TYPES  # type: ignore[assignment]
    dev: Dev

    def do_GET(self) -> None:
        if self.path.startswith(SERVER_PATH):
            self._proxy()
        elif self.path.startswith(DEV_PATH):
            self._dev()
        elif self.path.split("?", 1)[0] in ("/", "/index.html"):
            self._index()
        else:
            super().do_GET()

    def do_HEAD(self) -> None:
        if self.path.startswith(SERVER_PATH):
            self._proxy()
        else:
            super().do_HEAD()

    def _other(self) -> None:
        if self.path.startswith(SERVER_PATH):
            self._proxy()
        else:
            self.send_error(405, "the dev site is static; the server host is under /_server/")

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _other

    def end_headers(self) -> None:
        self.send_header("cache-control", "no-cache")  # a rebuilt file is picked up at once
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dev(self) -> None:
        if self.path.startswith(DEV_PATH + "version"):
            self._send(200, "application/json", json.dumps({"version": self.dev.version}).encode())
        elif self.path.startswith(DEV_PATH + "reload.js"):
            self._send(200, MIME_TYPES[".js"], RELOAD_JS.encode())
        else:
            self.send_error(404)

    def _index(self) -> None:
        index = Path(self.directory) / "index.html"
        try:
            page = index.read_bytes()
        except OSError:
            self._send(503, MIME_TYPES[""], b"no bundle yet: see the valor dev output")
            return
        self._send(200, MIME_TYPES[".html"], page.replace(b"</head>", RELOAD_TAG + b"</head>", 1))

    def _proxy(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        target = "/" + self.path[len(SERVER_PATH) :]
        connection = http.client.HTTPConnection(*self.dev.server.address, timeout=120)
        try:
            connection.request(self.command, target, body=body, headers=headers)
            answer = connection.getresponse()
            content = answer.read()
        except OSError as exc:
            problem = {"status": 502, "error": "Bad Gateway", "detail": f"server host: {exc}"}
            self._send(502, "application/json", json.dumps(problem).encode())
            return
        finally:
            connection.close()
        self.send_response_only(answer.status)  # the server host's own date and server headers
        for name, value in answer.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("content-length", str(len(content)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(content)

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class Dev:
    """The dev loop: build, serve both hosts, rebuild and restart on changes."""

    def __init__(
        self,
        manifest: Path,
        out: Path,
        host: str,
        port: int,
        server_port: int,
        say: Callable[[str], None] = print,
    ) -> None:
        self.manifest = manifest
        self.out = out
        self.server = ServerProcess(manifest, host, server_port)
        handler = type("Handler", (DevHandler,), {"dev": self})
        self.site = http.server.ThreadingHTTPServer(
            (host, port), partial(handler, directory=str(out.resolve()))
        )
        self.site.daemon_threads = True
        self.version = 0
        self.say = say
        self._compiled: set[str] = set()

    @property
    def site_url(self) -> str:
        host, port = self.site.server_address[:2]
        return f"http://{host}:{port}/"

    def rebuild(self) -> bool:
        """Build the bundle; on failure say why and keep the last good one."""
        from .build import BuildError, build

        started = time.perf_counter()
        try:
            bundle = build(self.manifest, self.out, quiet=True)
        except (BuildError, ManifestError) as exc:
            self.say(f"valor dev: build failed, still serving the last good bundle:\n  {exc}")
            return False
        elapsed = time.perf_counter() - started
        self.say(f"valor dev: built bundle {bundle.version} in {elapsed:.1f} s")
        return True

    def compile(self, sources: set[Path]) -> None:
        """Rebuild the C plug-ins and Rust crates of the folders holding ``sources``
        (``valor.toolchain``)."""
        from .toolchain import ToolchainError, build

        folders = {folder for source in sources if (folder := _sources_folder(source))}
        for folder in sorted(folders):
            outputs = folder.parent / "build"
            before = _mtimes(outputs)
            try:
                build(folder, outputs)
            except ToolchainError as exc:
                self.say(f"valor dev: compiling failed, keeping the last build:\n  {exc}")
                continue
            built = {path for path, mtime in _mtimes(outputs).items() if before.get(path) != mtime}
            if built:
                self.say(f"valor dev: compiled {', '.join(sorted(Path(p).name for p in built))}")
            # Our own outputs come back as a change event: one rebuild is enough.
            self._compiled |= built

    def changed(self, paths: set[str]) -> None:
        paths, self._compiled = paths - self._compiled, set()
        if not paths:
            return
        shown = ", ".join(sorted(os.path.relpath(p) for p in paths)[:5])
        self.say(f"valor dev: changed: {shown}")
        self.compile({Path(p) for p in paths})
        self.rebuild()
        self.server.restart()
        self.version += 1  # open demo pages reload

    def run(self, stop: threading.Event) -> None:
        from watchfiles import watch

        out = self.out.resolve()
        store = _store_file(self.manifest)
        sources = [*self.manifest.parent.rglob("*.c"), *self.manifest.parent.rglob("Cargo.toml")]
        self.compile({p for p in sources if not p.is_relative_to(out)})
        self._compiled.clear()
        self.rebuild()
        self.server.start()
        threading.Thread(target=self.site.serve_forever, daemon=True).start()
        host, port = self.server.address
        self.say(
            f"valor dev: browser host  {self.site_url}\n"
            f"           server host   http://{host}:{port}/\n"
            f"           demo page, either host: {self.site_url}?server={SERVER_PATH}\n"
            f"           watching {self.manifest.parent}/ (Ctrl+C to stop)"
        )
        try:
            for changes in watch(
                self.manifest.parent,
                stop_event=stop,
                watch_filter=lambda _, path: (
                    not (
                        Path(path).is_relative_to(out)
                        or ".part" in Path(path).name  # compiling
                        or (store is not None and path.startswith(store))  # and -wal, -shm
                    )
                ),
                raise_interrupt=False,
            ):
                self.changed({path for _, path in changes})
        finally:
            self.site.shutdown()
            self.site.server_close()
            self.server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="valor dev",
        description="Serve the bundle and the server side by side, rebuilding on changes.",
    )
    parser.add_argument(
        "manifest",
        nargs="?",
        default="plugins/plugins.json",
        metavar="MANIFEST",
        help="the manifest: a JSON file listing the plug-ins; its folder is watched "
        "(default: plugins/plugins.json)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address both servers bind (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=8080, help="port of the site, the browser host (default: 8080)"
    )
    parser.add_argument(
        "--server-port",
        type=int,
        default=8000,
        metavar="PORT",
        help="port of the server host, also proxied at /_server/ (default: 8000)",
    )
    parser.add_argument("--out", default=".valor-dev", help="bundle folder (default: .valor-dev)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    manifest = Path(args.manifest)
    if not manifest.is_file():
        print(f"valor dev: manifest not found: {manifest}", file=sys.stderr)
        return 2
    try:
        dev = Dev(manifest, Path(args.out), args.host, args.port, args.server_port, _say)
    except OSError as exc:
        print(f"valor dev: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    # SIGTERM stops as cleanly as Ctrl+C: the server subprocess must not outlive us.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        dev.run(stop)
    return 0


def _sources_folder(path: Path) -> Path | None:
    """The folder ``valor.toolchain`` builds for a changed source: a C file's own, the folder
    holding a Rust crate for its ``.rs`` files and ``Cargo.toml``; None for any other file."""
    if path.suffix in (".c", ".h"):
        return path.parent
    if path.suffix == ".rs" or path.name == "Cargo.toml":
        for folder in path.parents:
            if (folder / "Cargo.toml").is_file():
                return folder.parent
    return None


def _store_file(manifest: Path) -> str | None:
    """The server host's SQLite store, as ``valor serve MANIFEST`` picks it: its writes (and
    SQLite's files beside it) are the plug-ins' data, not sources to rebuild on."""
    url = os.environ.get("VALOR_STORE")
    base_dir = Path.cwd()
    if not url:
        base_dir = manifest.parent
        with contextlib.suppress(ManifestError, OSError, ValueError):
            url = load_manifest(manifest).store
        url = url or default_url(base_dir)
    with contextlib.suppress(StoreError):
        path = sqlite_path(url, base_dir)
        return None if path is None else str(path.resolve())
    return None


def _mtimes(folder: Path) -> dict[str, float]:
    if not folder.is_dir():
        return {}
    return {str(path): path.stat().st_mtime for path in folder.iterdir() if path.is_file()}


def _say(text: str) -> None:
    print(text, flush=True)
