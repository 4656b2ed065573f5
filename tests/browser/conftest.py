"""Browser tests: the bundle is built once per session, served by a real static HTTP server on
127.0.0.1 (at ``/`` and under a sub-path) and driven in real headless Chromium.

Booting Pyodide takes seconds, so one runtime tab (``runtime_page``) is shared by most tests.
"""

from __future__ import annotations

import base64
import functools
import json
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.cases import Answer, Case
from tests.servers import MANIFEST, PARITY_MANIFEST, ROOT
from valor.build import build, serve
from valor.headers import Headers
from valor.static import StaticServer
from valor.testing.hosts import CHROMIUM_ARGS, FETCH

CHROMIUM = "/usr/bin/chromium"
SUB_PATH = "/sub/path/"
ARTIFACTS = ROOT / "tests" / "artifacts"
# A page in the site that loads valor.js without starting it, so a test picks the options.
BLANK_PAGE = '<!doctype html><meta charset="utf-8"><script type="module" src="valor.js"></script>'
START = "(options) => Valor.start(options)"
BOOT = 120_000  # ms: a busy machine boots slowly


@dataclass
class Site:
    url: str  # ends with "/"
    base: str
    folder: Path


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, Any]:
    """Launch the system Chromium for pytest-playwright, kept off every network but loopback."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser.sh")
    return {"executable_path": CHROMIUM, "headless": True, "args": CHROMIUM_ARGS}


def site_for(
    tmp_path_factory: pytest.TempPathFactory, base: str, manifest: Path = MANIFEST
) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("site") / "dist"
    build(manifest, folder, base=base, quiet=True)
    (folder / "blank.html").write_text(BLANK_PAGE)
    server = serve(folder, base)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(server.url, base, folder)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``plugins/plugins.json`` bundled for the root of a host."""
    yield from site_for(tmp_path_factory, "/")


@pytest.fixture(scope="session")
def sub_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The same plug-ins bundled for, and served under, a sub-path."""
    yield from site_for(tmp_path_factory, SUB_PATH)


@pytest.fixture(scope="module")
def parity_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``tests/parity/plugins`` bundled for the root of a host."""
    yield from site_for(tmp_path_factory, "/", PARITY_MANIFEST)


@pytest.fixture(scope="session")
def runtime_context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    yield context
    context.close()


@pytest.fixture(scope="session")
def runtime_page(runtime_context: BrowserContext, site: Site) -> Page:
    """The demo page with its runtime booted: shared, so Pyodide boots once for most tests."""
    page = runtime_context.new_page()
    page.goto(site.url)
    page.evaluate(START, {})
    return page


def start_page(context: BrowserContext, url: str, **options: Any) -> Page:
    """A new tab on ``blank.html`` whose runtime is started with ``options``."""
    page = context.new_page()
    page.goto(url + "blank.html")
    page.evaluate(START, options)
    return page


def fetch(
    page: Page,
    url: str,
    method: str = "GET",
    headers: dict[str, str] | list[list[str]] | None = None,
    body: bytes | None = None,
) -> Answer:
    """``fetch()`` in the page, as a script of the page would; the answer as the table wants."""
    result = page.evaluate(
        FETCH,
        {
            "url": url,
            "method": method,
            "headers": headers or {},
            "body": None if body is None else base64.b64encode(body).decode(),
        },
    )
    return Answer(
        result["status"],
        Headers(result["headers"]),
        base64.b64decode(result["body"]),
        result["reason"],
    )


def browser_send(page: Page, site: Site):
    """A ``send`` for the shared request table: paths are relative to the site's base."""

    def send(case: Case) -> Answer:
        url = site.url + case.path.lstrip("/")
        return fetch(page, url, case.method, case.headers, case.body)

    return send


@contextmanager
def served(server: StaticServer) -> Iterator[StaticServer]:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


GATE_PLUGIN = """import sys
from valor import vlugin

@vlugin
async def on_create(ctx):
    if sys.platform == "emscripten":  # the browser's runtime waits; the server's does not
        from js import fetch
        await fetch("/gate-opened")  # not under a prefix: the network answers

@vlugin
def on_request(ctx, req):
    return "open"
"""


HOLD_BOOT = """(() => {
  // A test's hand on the boot: every runtime worker's "boot" message waits for releaseBoot(),
  // so a tab's runtime stays booting as long as the test needs, with no timing involved.
  const post = Worker.prototype.postMessage;
  const held = [];
  let released = false;
  Worker.prototype.postMessage = function (message, ...rest) {
    if (message?.type === "boot" && !released) held.push(() => post.call(this, message, ...rest));
    else post.call(this, message, ...rest);
  };
  globalThis.releaseBoot = () => {
    released = true;
    for (const send of held.splice(0)) send();
  };
})();"""


def hold_boot(context: BrowserContext) -> None:
    """Every page of ``context`` holds its runtime's boot until it calls ``releaseBoot()``."""
    context.add_init_script(HOLD_BOOT)


def gated_manifest(folder: Path) -> Path:
    """``plugins/plugins.json`` plus ``gate``, whose ``on_create`` holds its loading in the
    browser until ``GatedServer``'s gate opens: the plug-in stays loading as long as a test
    needs, with no timing involved. The server host runs the same manifest."""
    shutil.copytree(MANIFEST.parent, folder)
    (folder / "gate.py").write_text(GATE_PLUGIN)
    manifest = json.loads((folder / "plugins.json").read_text())
    manifest["plugins"].append({"name": "gate", "type": "python", "path": "gate.py"})
    (folder / "plugins.json").write_text(json.dumps(manifest))
    return folder / "plugins.json"


class GatedServer(StaticServer):
    """A static host that answers ``GET /gate-opened`` only once ``gate`` is set."""

    def __init__(self, folder: Path, gate: threading.Event) -> None:
        super().__init__(folder, "/")
        handler = self.RequestHandlerClass
        assert isinstance(handler, functools.partial)

        def do_get(request) -> None:
            if request.path != "/gate-opened":
                handler.func.do_GET(request)
                return
            gate.wait(BOOT / 1000)
            request.send_response(204)
            request.end_headers()

        gated = type("GatedHandler", (handler.func,), {"do_GET": do_get})
        self.RequestHandlerClass = functools.partial(gated, **handler.keywords)
