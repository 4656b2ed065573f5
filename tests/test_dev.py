"""``valor dev``: the bundle and the server host side by side, rebuilt and reloaded on changes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from valor.processes import free_port
from valor.testing.hosts import Chromium

PLUGIN = "from valor import vlugin\n\n@vlugin\ndef on_request(req):\n    return {text!r}\n"


@dataclass
class DevRun:
    folder: Path
    site: str
    server: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def version(self) -> int:
        return httpx.get(self.site + "_dev/version").json()["version"]

    def set_plugin(self, text: str) -> None:
        (self.folder / "plugins" / "hello.py").write_text(PLUGIN.format(text=text))


def wait_for(check: Callable[[], Any], what: str, run: DevRun, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; valor dev said:\n{run.log()}")
        time.sleep(0.1)


def scaffold(folder: Path, name: str, kind: str, timeout: float) -> None:
    """``valor new NAME --kind KIND`` in ``folder``, as a user starts a plug-in."""
    command = [sys.executable, "-m", "valor.cli", "new", name, "--kind", kind]
    subprocess.run(command, cwd=folder, check=True, capture_output=True, timeout=timeout)


@contextlib.contextmanager
def running_dev(folder: Path, *args: str) -> Iterator[DevRun]:
    """``valor dev`` started in ``folder`` on free ports, stopped (SIGTERM) when left."""
    site_port, server_port = free_port(), free_port()
    log_path = folder / "dev.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "valor.cli", "dev", *args,
             "--port", str(site_port), "--server-port", str(server_port), "--out", "site"],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    run = DevRun(
        folder,
        f"http://127.0.0.1:{site_port}/",
        f"http://127.0.0.1:{server_port}/",
        process,
        log_path,
    )
    try:
        yield run
    finally:
        process.terminate()  # SIGTERM: valor dev stops its server subprocess too
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            raise


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[DevRun]:
    (tmp_path / "plugins").mkdir()
    manifest = {"plugins": [{"name": "hello", "type": "python", "path": "hello.py"}]}
    (tmp_path / "plugins" / "plugins.json").write_text(json.dumps(manifest))
    (tmp_path / "plugins" / "hello.py").write_text(PLUGIN.format(text="one"))
    with running_dev(tmp_path, "plugins/plugins.json") as run:
        wait_for(lambda: httpx.get(run.site + "_server/_health").status_code == 200, "start", run)
        yield run
    assert run.process.returncode == 0, run.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(run.server + "_health", timeout=2)


def test_serves_both_hosts_side_by_side(dev: DevRun) -> None:
    assert httpx.get(dev.server + "hello").text == "one"
    proxied = httpx.post(dev.site + "_server/hello?x=1", content=b"body")
    assert proxied.text == "one"
    assert proxied.headers["x-valor-plugin"] == "hello"
    assert httpx.get(dev.site + "_server/nope").status_code == 404
    page = httpx.get(dev.site)
    assert '<script type="module" src="/_dev/reload.js"></script></head>' in page.text
    assert "location.reload()" in httpx.get(dev.site + "_dev/reload.js").text
    bundle = httpx.get(dev.site + "valor-bundle.json").json()
    assert "plugins/hello.py" in bundle["files"]
    assert httpx.delete(dev.site + "index.html").status_code == 405
    assert f"demo page, either host: {dev.site}?server=/_server/" in dev.log()


def test_a_change_rebuilds_restarts_and_reloads(dev: DevRun) -> None:
    version = dev.version()
    dev.set_plugin("two")
    wait_for(lambda: httpx.get(dev.server + "hello").text == "two", "the server restart", dev)
    assert "return 'two'" in httpx.get(dev.site + "plugins/hello.py").text
    # Raised just after the restart: the new server may answer a moment before.
    wait_for(lambda: dev.version() > version, "the version", dev)
    assert "changed: plugins/hello.py" in dev.log()


COUNTER = """from valor import vlugin


def on_create(ctx):
    pass


@vlugin
async def on_request(ctx, req):
    return str(await ctx.store.increment("hits"))
"""


def test_the_plugins_store_is_data_not_a_change(dev: DevRun) -> None:
    """The server's SQLite store sits beside the manifest, in the watched folder. Its files
    change on every write and every restart (a checkpoint when the server stops): none of it
    may rebuild the bundle and restart the server (which would change them again)."""
    (dev.folder / "plugins" / "hello.py").write_text(COUNTER)
    wait_for(lambda: httpx.post(dev.server + "hello").text.isdigit(), "the counter", dev)
    hits = [int(httpx.post(dev.server + "hello").text) for _ in range(20)]
    assert hits == list(range(hits[0], hits[0] + 20))
    # Changes after the writes and after a restart: once the last is seen, any event the
    # store's files made has been seen too.
    for sentinel in ("one.txt", "two.txt"):
        version = dev.version()
        (dev.folder / "plugins" / sentinel).write_text("seen")
        # The change is logged before the old server stops: only the version, raised after the
        # new server started, tells that the answer below comes from the new one.
        wait_for(lambda version=version: dev.version() > version, sentinel, dev)
        wait_for(lambda: httpx.post(dev.server + "hello").text.isdigit(), "the restart", dev)
    changes = [line for line in dev.log().splitlines() if line.startswith("valor dev: changed:")]
    assert changes[-2:] == [
        "valor dev: changed: plugins/one.txt",
        "valor dev: changed: plugins/two.txt",
    ]
    assert not any("valor-store" in line for line in changes), dev.log()
    assert int(httpx.post(dev.server + "hello").text) > hits[-1]  # the count kept


def test_a_broken_build_keeps_the_last_good_bundle(dev: DevRun) -> None:
    manifest = dev.folder / "plugins" / "plugins.json"
    good = manifest.read_text()
    bundle = httpx.get(dev.site + "valor-bundle.json").json()["version"]
    manifest.write_text('{"plugins": [{"name": "hello", "type": "python"}]}')
    wait_for(lambda: "build failed" in dev.log(), "the build failure", dev)
    assert "plug-in 'hello': 'path' is required" in dev.log()
    assert httpx.get(dev.site + "valor-bundle.json").json()["version"] == bundle
    manifest.write_text(good)
    dev.set_plugin("fixed")
    wait_for(lambda: httpx.get(dev.server + "hello").text == "fixed", "recovery", dev)
    wait_for(
        lambda: httpx.get(dev.site + "valor-bundle.json").json()["version"] != bundle,
        "a new bundle",
        dev,
    )


def test_the_demo_page_sends_to_either_host_and_reloads_on_change(
    dev: DevRun, valor_chromium: Chromium
) -> None:
    async def scenario() -> dict[str, Any]:
        context = await valor_chromium.browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(dev.site + "?server=/_server/")
            await page.evaluate("() => Valor.start()")

            async def send(host: str) -> dict[str, str]:
                await page.select_option("#host", host)
                await page.fill("#path", "hello")
                await page.click("#send")
                await page.wait_for_selector("#response:not([hidden])")
                await page.wait_for_function("() => !document.querySelector('#send').disabled")
                rows = await page.eval_on_selector_all(
                    "#response-headers tr",
                    "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])",
                )
                body = await page.text_content("#response-body")
                return {"body": body or "", **dict(rows)}

            on_server = await send("server")
            in_browser = await send("browser")
            await page.evaluate("() => { window.beforeChange = true; }")
            async with page.expect_navigation(timeout=60_000):
                dev.set_plugin("changed")  # the dev page polls and reloads after the rebuild
            assert await page.evaluate("() => window.beforeChange") is None
            await asyncio.wait_for(page.evaluate("() => Valor.start()"), 60)
            reloaded = await page.evaluate("async () => (await fetch('hello')).text()")
            return {"server": on_server, "browser": in_browser, "reloaded": reloaded}
        finally:
            await context.close()

    seen = valor_chromium.run(scenario())
    assert seen["server"]["body"] == "one"
    assert seen["server"]["server"] == "uvicorn"  # answered by the server host
    assert seen["browser"]["body"] == "one"
    assert "server" not in seen["browser"]  # answered in the page's own runtime
    assert seen["browser"]["x-valor-plugin"] == "hello"
    assert seen["reloaded"] == "changed"


def test_a_changed_c_source_is_compiled_and_served(tmp_path: Path) -> None:
    """A wasm plug-in: editing its C source recompiles it, once, and both hosts get it."""
    scaffold(tmp_path, "calc", "wasm", timeout=120)
    with running_dev(tmp_path) as run:
        calc = run.site + "_server/calc"
        wait_for(lambda: httpx.get(calc).text == "Hello world, from calc!", "start", run)
        source = tmp_path / "plugins" / "src" / "calc.wasm.c"
        source.write_text(source.read_text().replace("Hello world", "Compiled again"))
        wait_for(lambda: httpx.get(calc).text == "Compiled again, from calc!", "the recompile", run)
        assert "compiled calc.wasm" in run.log()
        wasm = httpx.get(run.site + "plugins/build/calc.wasm").content
        assert b"Compiled again" in wasm  # the bundle has the new module too
        time.sleep(3)  # the compiled output's own change event must not cause a second round
        assert run.log().count("valor dev: changed:") == 1, run.log()


@pytest.mark.timeout(600)
def test_a_changed_rust_crate_is_rebuilt_and_served(tmp_path: Path) -> None:
    """A Rust plug-in: editing its lib.rs rebuilds the crate, and both hosts get it."""
    scaffold(tmp_path, "calc", "rust", timeout=300)
    with running_dev(tmp_path) as run:
        calc = run.site + "_server/calc"
        wait_for(lambda: httpx.get(calc).text == "Hello world, from calc!", "start", run, 240)
        source = tmp_path / "plugins" / "src" / "calc" / "src" / "lib.rs"
        source.write_text(source.read_text().replace("Hello {}", "Rebuilt {}"))
        rebuilt = "Rebuilt world, from calc!"
        wait_for(lambda: httpx.get(calc).text == rebuilt, "the rebuild", run, 240)
        assert "compiled calc.so, calc.wasm" in run.log(), run.log()
        assert b"Rebuilt" in httpx.get(run.site + "plugins/build/calc.wasm").content


def test_a_missing_manifest_or_a_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    missing = subprocess.run(
        [sys.executable, "-m", "valor.cli", "dev", "nope.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2
    assert "valor dev: manifest not found: nope.json" in missing.stderr
    (tmp_path / "plugins.json").write_text('{"plugins": []}')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run(
            [sys.executable, "-m", "valor.cli", "dev", "plugins.json", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert taken.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in taken.stderr
