"""A static HTTP server for a built site, with the MIME types module scripts and wasm need."""

from __future__ import annotations

import http.server
from functools import partial
from pathlib import Path
from typing import Any

# Explicit: module scripts fail with a non-JS type, and the system's mime.types may be missing.
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".zip": "application/zip",
    ".whl": "application/zip",
    ".py": "text/x-python; charset=utf-8",
    "": "application/octet-stream",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = MIME_TYPES  # type: ignore[assignment]
    base = "/"

    def translate_path(self, path: str) -> str:
        # Serve the site only under its base; everything else is a 404 like on a real host.
        clean = path.split("?", 1)[0].split("#", 1)[0]
        if not (clean + "/").startswith(self.base):
            return str(Path(self.directory) / ".valor-outside-base")
        return super().translate_path("/" + clean[len(self.base) :])

    def end_headers(self) -> None:
        # Revalidate every time, so a rebuilt site is picked up on reload.
        self.send_header("cache-control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class StaticServer(http.server.ThreadingHTTPServer):
    """Serves ``folder`` at ``http://host:port{base}``."""

    daemon_threads = True

    def __init__(self, folder: Path, base: str, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"base": base})
        super().__init__((host, port), partial(handler, directory=str(folder)))
        self.base = base

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}{self.base}"
