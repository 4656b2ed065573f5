"""The two real hosts as test clients: ``ServerHost`` (``valor serve``, real uvicorn) and
``BrowserHost`` (the built bundle on a static server, in headless Chromium).

Both are ``httpx.Client``s (``host.get("/hello")``), as ``TestClient`` is, so one test runs
against any of them. Playwright is imported only when a browser starts.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Self

import httpx

from ..processes import free_port, stop_process
from .loop import LoopThread

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BOOT_TIMEOUT = 120.0  # seconds for a host to start: Pyodide's first boot takes a few


class HostError(RuntimeError):
    """A host that did not start; the message carries its log."""


class Host(httpx.Client):
    """A host the tests reach with httpx: started on entering a ``with``, stopped (``close``)
    on leaving it."""

    name: str

    def __enter__(self) -> Self:
        super().__enter__()
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def start(self) -> None:
        raise NotImplementedError


class ServerHost(Host):
    """``valor serve MANIFEST`` in a subprocess on 127.0.0.1, reached over HTTP. Its store
    starts empty, in memory, unless ``args`` has ``--store``."""

    name = "server"

    def __init__(
        self,
        manifest: str | PathLike[str],
        args: Sequence[str] = (),
        log_dir: str | PathLike[str] | None = None,
    ) -> None:
        # Redirects are followed, as fetch() follows them in the browser host.
        super().__init__(timeout=BOOT_TIMEOUT, follow_redirects=True)
        self.manifest = Path(manifest)
        self.args = list(args)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    def start(self) -> None:
        port = free_port()
        log_dir = self.log_dir or Path(tempfile.mkdtemp(prefix="valor-server-"))
        self._log_path = log_dir / f"valor-serve-{port}.log"
        command = [sys.executable, "-m", "valor.cli", "serve", str(self.manifest)]
        with open(self._log_path, "wb") as log:
            self._process = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(port), *self._store_args()],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.base_url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            status = self._process.poll()
            if status is not None:
                log_text = self.log()
                self.close()
                raise HostError(f"valor serve exited with {status}:\n{log_text}")
            try:
                self.get("/_health", timeout=1)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    log_text = self.log()
                    self.close()
                    raise HostError(f"valor serve did not start:\n{log_text}") from None
                time.sleep(0.05)

    def _store_args(self) -> list[str]:
        if "--store" in self.args or any(a.startswith("--store=") for a in self.args):
            return self.args
        return [*self.args, "--store", "memory:"]

    def log(self) -> str:
        """What the server has written so far (access log, load failures, tracebacks)."""
        if self._log_path is None or not self._log_path.exists():
            return ""
        return self._log_path.read_text(errors="replace")

    def close(self) -> None:
        super().close()
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)


def find_chromium() -> str | None:
    """A Chromium to drive: ``$VALOR_CHROMIUM``, one on ``PATH``, else Playwright's own."""
    configured = os.environ.get("VALOR_CHROMIUM")
    if configured:
        return configured  # a wrong path is a configuration error, reported when launching
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """Headless Chromium driven by Playwright on its own loop, shared by browser hosts.

    ``executable`` None means Playwright's downloaded Chromium (``playwright install``).
    """

    def __init__(self, executable: str | None) -> None:
        self.executable = executable
        self.loop: LoopThread | None = None
        self.browser: Any = None
        self._playwright: Any = None

    def start(self) -> Chromium:
        from playwright.async_api import async_playwright

        self.loop = LoopThread("valor-chromium")
        try:
            self._playwright = self.loop.run(async_playwright().start())
            self.browser = self.loop.run(
                self._playwright.chromium.launch(
                    executable_path=self.executable, headless=True, args=CHROMIUM_ARGS
                )
            )
        except BaseException:
            self.close()
            raise
        return self

    def run(self, coroutine: Any, timeout: float = BOOT_TIMEOUT) -> Any:
        assert self.loop is not None, "Chromium is not started"
        return self.loop.run(coroutine, timeout)

    def close(self) -> None:
        loop, self.loop = self.loop, None
        if loop is None:
            return
        try:
            if self.browser is not None:
                loop.run(self.browser.close())
            if self._playwright is not None:
                loop.run(self._playwright.stop())
        finally:
            loop.stop()


FETCH = """async ({url, method, headers, body}) => {
  const init = {method, headers};
  if (body !== null) init.body = Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
  const response = await fetch(url, init);
  const bytes = new Uint8Array(await response.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return {status: response.status, reason: response.statusText, headers: [...response.headers],
          body: btoa(binary)};
}"""


class BrowserTransport(httpx.BaseTransport):
    """Sends each request as a ``fetch()`` in ``host``'s page, where the service worker hands
    it to the page's Pyodide runtime."""

    def __init__(self, host: BrowserHost) -> None:
        self.host = host

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = self.host
        body = request.read()
        result = host.chromium.run(
            host._page.evaluate(
                FETCH,
                {
                    "url": str(request.url),
                    "method": request.method,
                    "headers": request.headers.multi_items(),
                    "body": base64.b64encode(body).decode() if body else None,
                },
            )
        )
        return httpx.Response(
            result["status"],
            headers=[(name, value) for name, value in result["headers"]],
            content=base64.b64decode(result["body"]),
            request=request,
            # fetch()'s statusText: Valor's reason phrases, as the server's status lines carry.
            extensions={"reason_phrase": result["reason"].encode("latin-1")},
        )


class BrowserHost(Host):
    """The manifest built by ``valor build``, served by a static server on 127.0.0.1 and
    answered in Chromium: each request is a ``fetch()`` in the page, which the service worker
    hands to the page's Pyodide runtime."""

    name = "browser"

    def __init__(
        self,
        manifest: str | PathLike[str],
        chromium: Chromium,
        folder: str | PathLike[str] | None = None,
        base: str = "/",
    ) -> None:
        super().__init__(transport=BrowserTransport(self), timeout=BOOT_TIMEOUT)
        self.manifest = Path(manifest)
        self.chromium = chromium
        self.folder = Path(folder) if folder is not None else None
        self.base = base
        self.console: list[str] = []  # the tab's console lines, the runtime worker's included
        self._server: Any = None
        self._context: Any = None
        self._page: Any = None

    def start(self) -> None:
        from ..build import build, serve

        folder = self.folder or Path(tempfile.mkdtemp(prefix="valor-site-"))
        build(self.manifest, folder / "dist", base=self.base, quiet=True)
        self._server = serve(folder / "dist", self.base)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.base_url = self._server.url
        try:
            self.chromium.run(self._open())
        except Exception as exc:
            console = "\n".join(self.console[-30:])
            self.close()
            raise HostError(f"the browser host did not start: {exc}\nconsole:\n{console}") from exc

    def log(self) -> str:
        """What the runtime has logged so far (load failures, tracebacks under their error
        id), as the tab's console showed it: the browser's ``ServerHost.log()``."""
        return "\n".join(self.console)

    async def _open(self) -> None:
        self._context = await self.chromium.browser.new_context()
        self._page = await self._context.new_page()
        self._page.on("console", lambda message: self.console.append(message.text))
        await self._page.goto(str(self.base_url))
        await self._page.evaluate("() => Valor.start()")

    def close(self) -> None:
        super().close()
        if self._context is not None and self.chromium.loop is not None:
            self.chromium.run(self._context.close())
        self._context = self._page = None
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
