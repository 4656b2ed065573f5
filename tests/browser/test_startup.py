"""Start-up in real Chromium: booting from the build's memory snapshot (and refusing one that
does not fit), the site kept offline after one visit, a new build replacing the old files, and
the server fallback (a real ``valor serve``) answering while the tab's runtime boots."""

from __future__ import annotations

import functools
import json
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext

from tests.browser.conftest import (
    BLANK_PAGE,
    BOOT,
    START,
    Site,
    browser_send,
    fetch,
    hold_boot,
    served,
    start_page,
)
from tests.browser.test_browser import BROWSER_CASES
from tests.browser.test_build import script_copy
from tests.cases import NOTE_ID, Answer, run_cases
from tests.servers import MANIFEST, valor_server
from valor import build as build_module
from valor import snapshot as snapshot_file
from valor.build import build, serve
from valor.processes import free_port
from valor.snapshot import BROWSER_ENVIRON, KEPT
from valor.static import StaticServer

pytestmark = pytest.mark.browser
PROBE = """import os, random, sys
from valor import vlugin

@vlugin
def on_request(req):
    return {"random": random.random(), "environ": dict(os.environ), "argv": sys.argv,
            "executable": sys.executable}
"""
# The headers in which the hosts' answers differ: which host answered (by design), and what
# uvicorn adds to every answer of the server.
HOST_HEADERS = {"x-valor-host", "date", "server", "content-length"}


@contextmanager
def new_context(browser: Browser) -> Iterator[BrowserContext]:
    """A new browser profile: nothing cached, no service worker."""
    context = browser.new_context()
    try:
        yield context
    finally:
        context.close()


def manifest(folder: Path, files: dict[str, str]) -> Path:
    """A manifest of Python plug-ins, one per file, named after it."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    plugins = [{"name": Path(name).stem, "type": "python", "path": name} for name in files]
    (folder / "plugins.json").write_text(json.dumps({"plugins": plugins}))
    return folder / "plugins.json"


def test_the_shared_table_runs_on_a_runtime_booted_from_the_snapshot(
    browser: Browser, site: Site
) -> None:
    with new_context(browser) as context:
        page = start_page(context, site.url)
        detail = page.evaluate("Valor.detail")
        assert detail["snapshot"] is True and detail["warnings"] == []
        run_cases(browser_send(page, site), BROWSER_CASES)
        assert fetch(page, site.url + "hello").headers["x-valor-host"] == "browser"


def _spoil_heap(folder: Path, spoil) -> None:
    heap = bytearray(snapshot_file.unpack((folder / "snapshot.bin").read_bytes()))
    spoil(heap)
    (folder / "snapshot.bin").write_bytes(snapshot_file.pack(bytes(heap)))


def _other_pyodide(folder: Path) -> None:
    def other_build_id(heap: bytearray) -> None:
        heap[16:48] = bytes(32)  # the Pyodide build id the snapshot was made with

    _spoil_heap(folder, other_build_id)


def _other_build(folder: Path) -> None:
    info = json.loads((folder / "valor-bundle.json").read_text())
    info["snapshot"]["key"] = "0123456789abcdef"  # as if the runtime wheel had changed
    (folder / "valor-bundle.json").write_text(json.dumps(info))


def _damaged(folder: Path) -> None:
    def zeroed_header(heap: bytearray) -> None:
        heap[:64] = bytes(64)

    _spoil_heap(folder, zeroed_header)


def _truncated(folder: Path) -> None:
    data = (folder / "snapshot.bin").read_bytes()
    (folder / "snapshot.bin").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_other_pyodide, "Snapshot build id mismatch"),
        (_other_build, "it was made for build"),
        (_damaged, "invalid magic number"),
        (_truncated, "the packed memory snapshot is damaged"),
    ],
    ids=["other-pyodide", "other-build", "damaged", "truncated"],
)
def test_a_snapshot_that_does_not_fit_is_skipped_with_a_warning(
    browser: Browser, site: Site, tmp_path: Path, spoil, reason: str
) -> None:
    folder = tmp_path / "dist"
    shutil.copytree(site.folder, folder)
    spoil(folder)
    with served(serve(folder)) as server, new_context(browser) as context:
        page = start_page(context, server.url)
        detail = page.evaluate("Valor.detail")
        assert detail["status"] == "ready" and detail["snapshot"] is False
        [warning] = detail["warnings"]
        assert "memory snapshot snapshot.bin was skipped" in warning and reason in warning
        assert "booted without it" in warning
        answer = fetch(page, server.url + "greeter?who=Snap")
        assert (answer.status, answer.body) == (200, b"Alice says hello Snap!")


def test_boots_from_one_snapshot_differ_and_keep_nothing_of_the_build_machine(
    browser: Browser, tmp_path: Path
) -> None:
    path = manifest(tmp_path / "plugins", {"probe.py": PROBE})
    build(path, tmp_path / "dist", quiet=True)
    (tmp_path / "dist" / "blank.html").write_text(BLANK_PAGE)
    seen = []
    with served(serve(tmp_path / "dist")) as server:
        for _ in range(2):
            with new_context(browser) as context:  # two profiles, two boots
                page = start_page(context, server.url)
                assert page.evaluate("Valor.detail.snapshot") is True
                answer = fetch(page, server.url + "probe")
                seen.append((answer.headers["x-correlation-id"], answer.json()))
    (first_id, first), (second_id, second) = seen
    assert first_id != second_id, "the request-id generator was reseeded"
    assert first["random"] != second["random"], "random was reseeded"
    for probe in (first, second):
        assert set(probe["environ"]) <= set(BROWSER_ENVIRON) | KEPT
        assert probe["environ"]["_"] == "./this.program" and probe["environ"]["LANG"] != ""
        assert probe["executable"] == "" or "this.program" in probe["executable"]
        everything = json.dumps(probe)
        for trace in (str(Path.home()), str(MANIFEST.parent.parent), "node", str(tmp_path)):
            assert trace not in everything, trace


def test_after_one_visit_the_site_boots_and_answers_offline(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    folder = tmp_path / "dist"
    shutil.copytree(site.folder, folder)
    with new_context(browser) as context:
        page = context.new_page()
        with served(serve(folder)) as server:
            page.goto(server.url)  # the demo page
            page.evaluate(START, {})
            assert fetch(page, server.url + "hello").status == 200
        # The static host is stopped: nothing answers on its port any more.
        page.reload()
        detail = page.evaluate(START, {})
        assert detail["status"] == "ready" and detail["snapshot"] is True
        run_cases(browser_send(page, Site(server.url, "/", folder)), BROWSER_CASES)
        for kind in ("hello-js", "hello-wasm", "hello-wasi", "hello-rust"):
            answer = fetch(page, server.url + kind)
            assert (answer.status, answer.body) == (200, b"Hello Plugin!"), kind
        assert fetch(page, server.url + "valor-bundle.json").status == 200  # from the cache


class RecordingServer(StaticServer):
    """A static host that notes the path of every request it answers."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder, "/")
        self.paths: list[str] = []
        handler = self.RequestHandlerClass
        assert isinstance(handler, functools.partial)
        paths = self.paths

        def do_get(request) -> None:
            paths.append(request.path)
            handler.func.do_GET(request)

        recording = type("RecordingHandler", (handler.func,), {"do_GET": do_get})
        self.RequestHandlerClass = functools.partial(recording, **handler.keywords)


def test_a_repeat_visit_asks_the_static_host_for_one_small_file(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    # After one visit everything comes from the service worker's cache; each navigation asks
    # only whether this build is still the one served (valor-bundle.json).
    folder = tmp_path / "dist"
    shutil.copytree(site.folder, folder)
    with served(RecordingServer(folder)) as server, new_context(browser) as context:
        page = context.new_page()
        page.goto(server.url)  # the demo page
        page.evaluate(START, {})
        page.evaluate("Valor.loaded()")
        server.paths.clear()
        page.reload()
        page.evaluate(START, {})
        assert fetch(page, server.url + "hello").body == b"Hello Plugin!"
        page.evaluate("Valor.loaded()")
        # Beside the page, the browser checks the service worker's script for updates itself.
        asked = [path for path in server.paths if not path.startswith("/valor-sw.js?")]
        assert asked == ["/valor-bundle.json"]


def test_a_bundle_built_without_node_boots_from_a_snapshot_this_browser_made(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A machine without Node: its own copy of the script, so no cached snapshot is taken.
    monkeypatch.setattr(build_module, "SNAPSHOT_SCRIPT", script_copy(tmp_path, "// no node\n"))
    which = build_module.shutil.which
    monkeypatch.setattr(build_module.shutil, "which", lambda n: None if n == "node" else which(n))
    folder = tmp_path / "dist"
    bundle = build(MANIFEST, folder, quiet=True)
    assert bundle.snapshot is None and bundle.snapshot_in_browser
    (folder / "blank.html").write_text(BLANK_PAGE)
    with served(serve(folder)) as server, new_context(browser) as context:
        page = start_page(context, server.url)
        detail = page.evaluate("Valor.detail")
        assert detail["snapshot"] is False
        assert "this browser makes one for its next boots" in detail["warnings"][0]
        page.wait_for_function("Valor.detail.snapshotKept === true", timeout=BOOT)
        page.reload()
        detail = page.evaluate(START, {})
        assert detail["snapshot"] is True and detail["warnings"] == []
        # The Pyodide that made it never serves: this one answers every kind (js, wasm, WASI).
        run_cases(browser_send(page, Site(server.url, "/", folder)), BROWSER_CASES)
        for kind in ("hello-js", "hello-wasm", "hello-wasi", "hello-rust"):
            answer = fetch(page, server.url + kind)
            assert (answer.status, answer.body) == (200, b"Hello Plugin!"), kind


def test_a_new_build_replaces_the_old_cache(browser: Browser, tmp_path: Path) -> None:
    plugin = "from valor import vlugin\n\n@vlugin\ndef on_request(req):\n    return {!r}\n"
    path = manifest(tmp_path / "plugins", {"v.py": plugin.format("one")})
    first = build(path, tmp_path / "dist", quiet=True)
    (tmp_path / "dist" / "blank.html").write_text(BLANK_PAGE)
    with served(serve(tmp_path / "dist")) as server, new_context(browser) as context:
        page = start_page(context, server.url)
        assert fetch(page, server.url + "v").body == b"one"
        assert f"valor-files:/:{first.version}" in page.evaluate("caches.keys()")
        (tmp_path / "plugins" / "v.py").write_text(plugin.format("two"))
        second = build(path, tmp_path / "dist", quiet=True)
        (tmp_path / "dist" / "blank.html").write_text(BLANK_PAGE)
        page.reload()
        page.evaluate(START, {})
        assert fetch(page, server.url + "v").body == b"two"
        # The new service worker controls the page; its activation drops the old files.
        assert page.evaluate("navigator.serviceWorker.controller.scriptURL").endswith(
            f"valor-sw.js?v={second.version}"
        )
        old = f"valor-files:/:{first.version}"
        page.wait_for_function(
            "async (old) => !(await caches.keys()).includes(old)", arg=old, timeout=BOOT
        )
        assert f"valor-files:/:{second.version}" in page.evaluate("caches.keys()")


def comparable(answer: Answer) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(n.lower(), v) for n, v in answer.headers.items() if n.lower() not in HOST_HEADERS]
    # An added note's id is random in each host, by design.
    headers = [(name, re.sub(NOTE_ID, "<id>", value)) for name, value in headers]
    return answer.status, sorted(headers), re.sub(NOTE_ID.encode(), b"<id>", answer.body)


def test_the_fallback_answers_while_the_runtime_boots_then_the_browser_does(
    browser: Browser, tmp_path: Path
) -> None:
    folder = tmp_path / "dist"
    manifest = MANIFEST
    requests = [
        ("GET", "hello", None),
        ("GET", "greeter?who=Fallback", None),
        ("GET", "notes", None),
        ("POST", "notes", b'{"text": "hi"}'),
        ("GET", "hello-js", None),
        ("GET", "hello-wasm", None),
        ("GET", "faulty/raise", None),
    ]
    with served(serve(folder)) as static:
        origin = static.url.rstrip("/")
        with valor_server(manifest, "--cors", origin, log_dir=tmp_path) as server:
            build(manifest, folder, fallback=server.url, quiet=True)
            (folder / "blank.html").write_text(BLANK_PAGE)
            with new_context(browser) as context:
                hold_boot(context)
                page = context.new_page()
                page.goto(static.url + "blank.html")
                detail = page.evaluate(START, {})
                # Resolved while the runtime still boots: it cannot, until it is released.
                assert detail["status"] == "booting"
                assert detail["fallback"] == server.url + "/"

                def send_all() -> list[Answer]:
                    return [
                        fetch(page, static.url + path, method, {"x-request-id": f"r{i}"}, body)
                        for i, (method, path, body) in enumerate(requests)
                    ]

                during = send_all()
                assert [a.headers["x-valor-host"] for a in during] == ["server"] * 7
                page.evaluate("releaseBoot()")
                page.wait_for_function("Valor.status === 'ready'", timeout=BOOT)
                after = send_all()
                assert [a.headers["x-valor-host"] for a in after] == ["browser"] * 7
                # A native plug-in, which the build left out: the tab's runtime proxies its
                # requests to the fallback server, which runs it.
                native = fetch(page, static.url + "hello-native?who=native")
                assert native.status == 200, native
                assert native.headers["x-valor-plugin"] == "hello-native"
                assert native.body == httpx.get(server.url + "/hello-native?who=native").content
                # A restarted service worker has lost the tab's port: the server answers
                # until the tab sends a new one, then the tab's runtime again.
                cdp = context.new_cdp_session(page)
                cdp.send("ServiceWorker.enable")
                cdp.send("ServiceWorker.stopAllWorkers")
                page.wait_for_function(
                    """async () => {
                          const r = await fetch("hello");
                          return r.status === 200 && r.headers.get("x-valor-host") === "browser";
                        }""",
                    timeout=BOOT,
                    polling=100,
                )
    # Equal answers, but for the host header; the error id of a failure is random.
    for one, other in zip(during[:-1], after[:-1], strict=True):
        assert comparable(one) == comparable(other)
    assert (during[-1].status, after[-1].status) == (500, 500)
    # Plug-in state lives in each host: the note posted to the server is not in the browser.
    posted_to_server = during[3].json()["id"]
    assert posted_to_server not in [note["id"] for note in after[2].json()["notes"]]


def test_with_the_fallback_down_requests_wait_for_the_runtime(
    browser: Browser, tmp_path: Path
) -> None:
    nothing_there = f"http://127.0.0.1:{free_port()}/"
    folder = tmp_path / "dist"
    build(MANIFEST, folder, fallback=nothing_there, quiet=True)
    (folder / "blank.html").write_text(BLANK_PAGE)
    with served(serve(folder)) as server, new_context(browser) as context:
        hold_boot(context)
        page = context.new_page()
        page.goto(server.url + "blank.html")
        status = page.evaluate(
            """async () => {
              await Valor.start();
              window.answer = fetch("greeter?who=Patient").then(async (r) =>
                [r.status, r.headers.get("x-valor-host"), await r.text()]);
              return Valor.status;
            }"""
        )
        assert status == "booting"  # the request was sent while the runtime booted
        page.evaluate("releaseBoot()")
        answer = page.evaluate("window.answer")
        assert answer == [200, "browser", "Alice says hello Patient!"]


OWN_PAGE = """<!doctype html><meta charset="utf-8"><title>My reading list</title>
<link rel="stylesheet" href="static/look.css">
<script type="module" src="valor.js"></script>
<p id="said">not yet</p>
"""


@pytest.mark.timeout(600)
def test_a_page_of_your_own_is_kept_offline_with_the_bundle(
    browser: Browser, tmp_path: Path
) -> None:
    # valor build --include: the site's own pages and files go in the bundle and its offline
    # cache, so the user's page loads (and its runtime answers) with the static host stopped.
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "hi.py").write_text(
        "from valor import vlugin\n\n@vlugin\ndef on_request(req):\n    return 'hi'\n"
    )
    manifest = tmp_path / "p" / "plugins.json"
    manifest.write_text(
        json.dumps({"plugins": [{"name": "hi", "type": "python", "path": "hi.py"}]})
    )
    own = tmp_path / "own"
    (own / "static").mkdir(parents=True)
    (own / "reading.html").write_text(OWN_PAGE)
    (own / "static" / "look.css").write_text("#said { color: rgb(1, 2, 3); }\n")
    build(manifest, tmp_path / "dist", quiet=True, include=[own / "reading.html", own])
    with new_context(browser) as context:
        page = context.new_page()
        with served(serve(tmp_path / "dist")) as server:
            page.goto(server.url + "reading.html")
            page.evaluate(START, {})
            assert fetch(page, server.url + "hi").body == b"hi"
        page.reload()  # the static host is stopped
        assert page.title() == "My reading list"
        color = page.evaluate("getComputedStyle(document.getElementById('said')).color")
        assert color == "rgb(1, 2, 3)"
        page.evaluate(START, {})
        assert fetch(page, server.url + "hi").body == b"hi"


def test_include_cannot_replace_the_bundles_own_files(tmp_path: Path) -> None:
    (tmp_path / "valor.js").write_text("")
    with pytest.raises(
        build_module.BuildError, match=r"would replace the bundle's own 'valor\.js'"
    ):
        build(MANIFEST, tmp_path / "dist", quiet=True, include=[tmp_path / "valor.js"])
    with pytest.raises(build_module.BuildError, match="no such file or folder"):
        build(MANIFEST, tmp_path / "dist", quiet=True, include=[tmp_path / "nowhere"])
