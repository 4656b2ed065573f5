"""The browser host in real Chromium: the shared table, tabs, service worker stops,
navigations, load, large bodies, failures, the registry and the demo page."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.browser.conftest import (
    ARTIFACTS,
    BLANK_PAGE,
    START,
    GatedServer,
    Site,
    browser_send,
    fetch,
    gated_manifest,
    hold_boot,
    served,
    start_page,
)
from tests.browser.wheels import write_wheel
from tests.cases import CASES, compare_cases
from tests.servers import MANIFEST, Server, http_send
from valor.build import build, serve

pytestmark = pytest.mark.browser


# Paths under no mounted prefix never reach the runtime in the browser: the service worker
# leaves them to the network (the static host's 404), by design. They are checked below.
NOT_INTERCEPTED = {"prefix-boundary", "not-found"}
BROWSER_CASES = [case for case in CASES if case.id not in NOT_INTERCEPTED]
# The native plug-in is server-only, so /_health counts one plug-in more on the server.
DIFFERENT_BY_DESIGN = {"health"}


def origin(site: Site) -> str:
    return site.url[: -len(site.base)]


def test_shared_table(runtime_page: Page, site: Site, server: Server) -> None:
    # Each case goes to a real server too: the two answers are checked and compared in full.
    sends = (http_send(server.url), browser_send(runtime_page, site))
    compare_cases(*sends, (server.url, origin(site)), BROWSER_CASES, DIFFERENT_BY_DESIGN)
    for case in CASES:
        if case.id in NOT_INTERCEPTED:
            answer = browser_send(runtime_page, site)(case)
            assert answer.status == case.status == 404
            assert "x-correlation-id" not in answer.headers, "went to the network untouched"


def test_shared_table_under_a_sub_path(browser: Browser, sub_site: Site, server: Server) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(sub_site.url)
        page.evaluate(START, {})
        # The notes plug-in answers Location with the full path, which includes the base.
        cases = [case for case in BROWSER_CASES if not case.id.startswith("notes-")]
        sends = (http_send(server.url), browser_send(page, sub_site))
        compare_cases(*sends, (server.url, origin(sub_site)), cases, DIFFERENT_BY_DESIGN)
        outside = fetch(page, sub_site.url.replace(sub_site.base, "/") + "hello")
        assert outside.status == 404 and "x-valor-plugin" not in outside.headers
        assert page.evaluate("Valor.prefixes").count("/sub/path/hello") == 1
        # A site under a sub-path has its own store, apart from a site at the origin's root.
        health = fetch(page, sub_site.url + "_health").json()
        assert health["store"] == "indexeddb:valor-store:/sub/path/"
    finally:
        context.close()


def test_only_prefixes_are_intercepted(runtime_page: Page, site: Site) -> None:
    page_file = fetch(runtime_page, site.url + "valor.js")
    assert page_file.status == 200 and b"Valor" in page_file.body
    missing = fetch(runtime_page, site.url + "not-a-plugin")
    assert missing.status == 404 and "x-correlation-id" not in missing.headers


def test_two_tabs_get_their_own_answers(
    runtime_context: BrowserContext, runtime_page: Page, site: Site
) -> None:
    # A plug-in added in one tab is kept in the site's store: a tab that starts later has it
    # too (tests/browser/test_store.py follows changes across open tabs).
    definition = {"name": "added-first", "type": "python", "path": "hello.py"}
    added = fetch(runtime_page, site.url + "_plugins", "POST", body=json.dumps(definition).encode())
    assert added.status == 201
    other = start_page(runtime_context, site.url)
    other.evaluate("Valor.loaded()")  # the registry's changes are applied as the load ends
    assert fetch(runtime_page, site.url + "added-first").body == b"Hello Plugin!"
    assert fetch(other, site.url + "added-first").body == b"Hello Plugin!"
    assert fetch(runtime_page, site.url + "_plugins/added-first", "DELETE").status == 200
    script = """async (tab) => Promise.all(Array.from({length: 50}, async (_, i) => {
      const body = `${tab}-${i}`;
      const r = await fetch("echo/" + body, {method: "POST", body});
      return (await r.text()) === body && r.headers.get("x-echo-url").endsWith(body);
    }))"""
    first = runtime_page.evaluate_handle(script, "first")
    second = other.evaluate_handle(script, "second")
    assert all(first.json_value()) and all(second.json_value())
    # Each tab has its own runtime, and they share the site's store: a note added in one is
    # listed in the other (tests/browser/test_store.py tells the whole story).
    added = fetch(other, site.url + "notes", "POST", body=b'{"text": "from the other tab"}')
    assert added.status == 201
    listed = fetch(runtime_page, site.url + "notes").json()
    assert added.json() in listed["notes"]
    # A closed tab's port is dropped: a navigation is answered by the tab still open.
    other.close()
    visitor = runtime_context.new_page()
    try:
        started = time.monotonic()
        response = visitor.goto(site.url + "hello")
        assert response is not None and response.status == 200
        assert visitor.inner_text("body") == "Hello Plugin!"
        assert time.monotonic() - started < 5
    finally:
        visitor.close()


def test_service_worker_stopped_mid_session(
    runtime_context: BrowserContext, runtime_page: Page, site: Site
) -> None:
    cdp = runtime_context.new_cdp_session(runtime_page)
    cdp.send("ServiceWorker.enable")
    try:
        for round_ in range(3):
            assert fetch(runtime_page, site.url + "hello").body == b"Hello Plugin!"
            cdp.send("ServiceWorker.stopAllWorkers")
            # The restarted worker has lost its ports and asks the page for a new one.
            answer = fetch(runtime_page, site.url + f"greeter?who=round{round_}")
            assert answer.status == 200, answer.body
            assert answer.body == f"Alice says hello round{round_}!".encode()
        # Many requests at once after a stop: they share the one new port.
        cdp.send("ServiceWorker.stopAllWorkers")
        answers = runtime_page.evaluate(
            """async () => Promise.all(Array.from({length: 50}, async (_, i) => {
              const r = await fetch("echo/" + i, {method: "POST", body: "after-stop-" + i});
              return [r.status, await r.text()];
            }))"""
        )
        assert answers == [[200, f"after-stop-{i}"] for i in range(50)]
    finally:
        cdp.send("ServiceWorker.disable")
        cdp.detach()


def test_navigation_with_a_runtime_tab(runtime_context: BrowserContext, site: Site) -> None:
    page = runtime_context.new_page()
    try:
        response = page.goto(site.url + "greeter?who=Nav")
        assert response is not None and response.status == 200
        assert response.headers["x-valor-plugin"] == "greeter"
        assert page.inner_text("body") == "Alice says hello Nav!"
    finally:
        page.close()


def test_navigation_without_a_runtime_tab_boots_one(browser: Browser, site: Site) -> None:
    context = browser.new_context()
    try:
        first = start_page(context, site.url)
        first.close()  # the service worker stays, with no runtime tab left
        page = context.new_page()
        page.goto(site.url + "greeter?who=Boot")
        expect(page.locator("pre")).to_have_text("Alice says hello Boot!", timeout=30_000)
        assert page.inner_text("#valor-boot") == "200 OK"
    finally:
        context.close()


PLAIN_PAGE = (
    '<!doctype html><meta charset="utf-8"><title>plain</title>'
    '<a id="nav" href="greeter?who=nav">greet</a>'
)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("how", ["link", "location"])
def test_a_navigation_from_a_page_without_valor_boots_a_runtime(
    browser: Browser, site: Site, how: str
) -> None:
    # A page of the site that never loads valor.js, controlled by the service worker: Chromium
    # gives the navigation it starts that page's client id, which will never send a port.
    (site.folder / "plain.html").write_text(PLAIN_PAGE)
    context = browser.new_context()
    try:
        start_page(context, site.url).close()  # the service worker stays, no runtime tab left
        page = context.new_page()
        page.goto(site.url + "plain.html")
        page.wait_for_function("navigator.serviceWorker.controller !== null")
        started = time.monotonic()
        if how == "link":
            page.click("#nav", no_wait_after=True)
        else:
            page.evaluate("location.href = 'greeter?who=nav'")
        # The boot page, then the plug-in's answer; not a 503 after the worker's timeout (35 s).
        expect(page.locator("pre")).to_have_text("Alice says hello nav!", timeout=30_000)
        assert page.inner_text("#valor-boot") == "200 OK"
        assert time.monotonic() - started < 30
    finally:
        context.close()


@pytest.mark.timeout(180)
def test_a_proxy_to_a_same_origin_path_under_its_own_prefix_reaches_the_network(
    browser: Browser, site: Site
) -> None:
    # Its upstream request is under a prefix the service worker intercepts: it must go to the
    # network (the static host), not back into Valor, which would answer it by proxying again.
    context = browser.new_context()
    try:
        page = start_page(context, site.url, timeout=8000)
        definition = {
            "name": "loop",
            "type": "proxy",
            "prefix": "/loop",
            "url": site.url + "loop/upstream",
        }
        added = fetch(page, site.url + "_plugins", "POST", body=json.dumps(definition).encode())
        assert added.status == 201, added.body
        started = time.monotonic()
        answer = fetch(page, site.url + "loop/x")
        assert time.monotonic() - started < 5  # not the 8 s timeout
        # The static host's own 404 for /loop/upstream/x, relayed by the proxy.
        assert answer.status == 404
        assert answer.headers["x-valor-plugin"] == "loop"
        assert not answer.body.startswith(b'{"status"'), "an error of Valor's, not the host's"
    finally:
        context.close()


def answers(page: Page, path: str, text: str) -> None:
    """Wait until ``fetch(path)`` answers ``text`` (a page whose service worker times out
    fast may need a few tries on a busy machine)."""
    page.wait_for_function(
        "async ([path, text]) => (await (await fetch(path)).text()) === text",
        arg=[path, text],
        timeout=60_000,
        polling=200,
    )


def test_booting_runtime_answers_503_then_serves(browser: Browser, site: Site) -> None:
    context = browser.new_context()
    hold_boot(context)
    try:
        page = context.new_page()
        page.goto(site.url + "blank.html")
        page.evaluate("releaseBoot()")  # the first visit boots: the prefixes are intercepted
        page.evaluate(START, {"timeout": 1500})
        page.reload()  # this boot is held
        # A request sent while this tab's new runtime boots waits 1.5 s, then 503.
        status, body = page.evaluate(
            """async () => {
              Valor.start({timeout: 1500});
              const r = await fetch("hello");
              return [r.status, await r.json()];
            }"""
        )
        assert status == 503
        assert "still booting" in body["detail"]
        page.evaluate("releaseBoot()")
        page.evaluate(START, {"timeout": 1500})
        # On a busy machine a plain request can outlast the 1.5 s too: each check waits for
        # the answer it expects, within a generous bound, instead of counting on one try.
        answers(page, "hello", "Hello Plugin!")
        # The service worker's own timeout: the plug-in's (2 s) is longer than the page's.
        hung = fetch(page, site.url + "faulty/hang")
        assert hung.status == 504
        assert "within 1.5 seconds" in hung.json()["detail"]
        answers(page, "faulty/ok", "still serving")
    finally:
        context.close()


def test_a_request_to_a_plugin_still_loading_waits_for_it(browser: Browser, tmp_path: Path) -> None:
    # The gate plug-in loads only once the test opens the gate: meanwhile the runtime is ready
    # and answers the others; a request to the gate waits, then gets its answer.
    gate = threading.Event()
    folder = tmp_path / "dist"
    build(gated_manifest(tmp_path / "plugins"), folder, quiet=True)
    (folder / "blank.html").write_text(BLANK_PAGE)
    context = browser.new_context()
    with served(GatedServer(folder, gate)) as static:
        try:
            page = context.new_page()
            page.goto(static.url + "blank.html")
            detail = page.evaluate(START, {})
            assert detail["status"] == "ready" and detail["loading"] is True
            assert "/gate" in detail["prefixes"]  # intercepted while it loads
            assert fetch(page, static.url + "hello").body == b"Hello Plugin!"
            page.evaluate(
                """() => {
                  window.gateAnswer = fetch("gate").then((r) => r.text());
                  window.loadedDetail = Valor.loaded();
                }"""
            )
            assert fetch(page, static.url + "greeter?who=Early").body == b"Alice says hello Early!"
            assert page.evaluate("Valor.detail.loading") is True  # the gate still holds
            gate.set()
            assert page.evaluate("window.gateAnswer") == "open"
            loaded = page.evaluate("window.loadedDetail")
            # Only the native plug-ins fail: the build left them out (a browser cannot load them).
            assert loaded["loading"] is False and len(loaded["failures"]) == 2
            assert all("a browser cannot load" in failure for failure in loaded["failures"])
            assert "gate" in [plugin["name"] for plugin in loaded["plugins"]]
        finally:
            gate.set()
            context.close()


def test_200_concurrent_fetches(runtime_page: Page) -> None:
    results = runtime_page.evaluate(
        """async () => Promise.all(Array.from({length: 200}, async (_, i) => {
          const r = await fetch("echo/n" + i, {method: "POST", body: "body-" + i,
                                               headers: {"x-request-id": "id-" + i}});
          return [r.status, await r.text(), r.headers.get("x-correlation-id")];
        }))"""
    )
    assert results == [[200, f"body-{i}", f"id-{i}"] for i in range(200)]


def test_5_mb_binary_round_trip(runtime_page: Page) -> None:
    digest_in, digest_out, size, same = runtime_page.evaluate(
        """async () => {
          const data = new Uint8Array(5 * 1024 * 1024);
          for (let i = 0; i < data.length; i += 65536) {
            crypto.getRandomValues(data.subarray(i, i + 65536));
          }
          const r = await fetch("echo/blob", {method: "POST", body: data,
                                headers: {"content-type": "application/octet-stream"}});
          const back = new Uint8Array(await r.arrayBuffer());
          const hex = async (b) => [...new Uint8Array(await crypto.subtle.digest("SHA-256", b))]
            .map((x) => x.toString(16).padStart(2, "0")).join("");
          const same = back.length === data.length && back.every((x, i) => x === data[i]);
          return [await hex(data), await hex(back), back.length, same];
        }"""
    )
    assert size == 5 * 1024 * 1024
    assert same and digest_in == digest_out


def test_oversized_body_is_413(runtime_page: Page, site: Site) -> None:
    answer = fetch(runtime_page, site.url + "echo", "POST", body=b"x" * (10 * 1024 * 1024 + 1))
    assert answer.status == 413
    assert "limit" in answer.json()["detail"]


def test_registry_post_adds_a_plugin_from_the_bundle(runtime_page: Page, site: Site) -> None:
    definition = {"name": "hello-again", "type": "python", "path": "hello.py", "prefix": "/again"}
    added = fetch(runtime_page, site.url + "_plugins", "POST", body=json.dumps(definition).encode())
    assert added.status == 201, added.body
    # The service worker intercepts the new prefix at once.
    answer = fetch(runtime_page, site.url + "again/x")
    assert answer.status == 200 and answer.headers["x-valor-plugin"] == "hello-again"
    listed = fetch(runtime_page, site.url + "_plugins").json()
    assert "hello-again" in [plugin["name"] for plugin in listed["plugins"]]
    taken = fetch(runtime_page, site.url + "_plugins", "POST", body=json.dumps(definition).encode())
    assert taken.status == 409
    bad = {"name": "nope", "type": "python", "path": "missing.py"}
    missing = fetch(runtime_page, site.url + "_plugins", "POST", body=json.dumps(bad).encode())
    assert missing.status == 400 and "missing.py" in missing.json()["detail"]
    removed = fetch(runtime_page, site.url + "_plugins/hello-again", "DELETE")
    assert removed.status == 200
    assert fetch(runtime_page, site.url + "again/x").status == 404


def test_version_check_between_page_and_service_worker(runtime_page: Page, site: Site) -> None:
    version = json.loads((site.folder / "valor-bundle.json").read_text())["version"]
    script_url = runtime_page.evaluate("navigator.serviceWorker.controller.scriptURL")
    assert script_url.endswith(f"valor-sw.js?v={version}")
    assert runtime_page.evaluate("import('./valor.js').then((m) => m.VERSION)") == version


def test_demo_page_as_a_person_uses_it(runtime_page: Page, site: Site) -> None:
    page = runtime_page
    expect(page.locator("#status")).to_have_attribute("data-status", "ready")
    expect(page.locator("#plugins")).to_contain_text("/greeter")
    page.get_by_role("button", name="/greeter").click()
    expect(page.locator("#path")).to_have_value("greeter")
    page.fill("#path", "greeter?who=Dana")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#response-status")).to_have_text("200 OK")
    expect(page.locator("#response-body")).to_have_text("Alice says hello Dana!")
    expect(page.locator("#response-headers")).to_contain_text("x-valor-plugin")
    expect(page.locator("#response-host")).to_have_text("answered by the browser")
    page.select_option("#method", "POST")
    page.fill("#path", "notes")
    page.fill("#headers", "content-type: application/json")
    page.fill("#body", '{"text": "from the demo"}')
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#response-status")).to_have_text("201 Created")
    expect(page.locator("#response-body")).to_contain_text('"text": "from the demo"')
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)
    assert (ARTIFACTS / "demo.png").stat().st_size > 10_000


def test_requirements_are_installed_from_the_bundle(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A local wheel folder stands in for the package index: the test needs no network.
    files = {"valor_testdep/__init__.py": 'WORD = "from a bundled requirement"\n'}
    write_wheel(tmp_path / "index", "valor_testdep", "1.0", "py3-none-any", files)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "index"))
    plugin = {"name": "dep", "type": "python", "path": "dep.py", "requirements": ["valor_testdep"]}
    source = tmp_path / "plugins"
    source.mkdir()
    (source / "dep.py").write_text(
        "import valor_testdep\nfrom valor import vlugin\n\n"
        "@vlugin\ndef on_request(req):\n    return valor_testdep.WORD\n"
    )
    (source / "plugins.json").write_text(json.dumps({"plugins": [plugin]}))
    build(source / "plugins.json", tmp_path / "dist", quiet=True)
    info = json.loads((tmp_path / "dist" / "valor-bundle.json").read_text())
    assert info["requirement_wheels"] == ["valor_testdep-1.0-py3-none-any.whl"]
    assert not (tmp_path / "dist" / "wheels" / info["requirement_wheels"][0]).exists()
    server = serve(tmp_path / "dist")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url)
        page.evaluate(START, {})
        state = page.evaluate("Valor.loaded()")
        assert state["failures"] == [] and "requirements" in state["steps"]
        assert fetch(page, server.url + "dep").body == b"from a bundled requirement"
    finally:
        context.close()
        server.shutdown()
        server.server_close()


def test_a_stale_service_worker_is_replaced_on_update(browser: Browser, tmp_path: Path) -> None:
    source = tmp_path / "plugins"
    source.mkdir()
    (source / "plugins.json").write_text(
        json.dumps({"plugins": [{"name": "v", "type": "python", "path": "v.py"}]})
    )
    plugin = "from valor import vlugin\n\n@vlugin\ndef on_request(req):\n    return {!r}\n"
    (source / "v.py").write_text(plugin.format("one"))
    first = build(source / "plugins.json", tmp_path / "dist", quiet=True)
    (tmp_path / "dist" / "blank.html").write_text(BLANK_PAGE)
    server = serve(tmp_path / "dist")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = start_page(context, server.url)
        assert fetch(page, server.url + "v").body == b"one"
        (source / "v.py").write_text(plugin.format("two"))
        second = build(source / "plugins.json", tmp_path / "dist", quiet=True)
        (tmp_path / "dist" / "blank.html").write_text(BLANK_PAGE)
        assert second.version != first.version
        page.reload()
        page.evaluate(START, {})
        script_url = page.evaluate("navigator.serviceWorker.controller.scriptURL")
        assert script_url.endswith(f"valor-sw.js?v={second.version}")
        assert fetch(page, server.url + "v").body == b"two"
    finally:
        context.close()
        server.shutdown()
        server.server_close()


def test_a_runtime_that_cannot_boot_is_an_error_event(
    browser: Browser, site: Site, tmp_path: Path
) -> None:
    broken = tmp_path / "dist"
    shutil.copytree(site.folder, broken)
    info = json.loads((broken / "valor-bundle.json").read_text())
    (broken / info["runtime_wheel"]).unlink()
    server = serve(broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(server.url + "blank.html")
        outcome = page.evaluate(
            """async () => {
              const events = [];
              Valor.addEventListener("status", (e) => events.push(e.detail.status));
              try { await Valor.start(); return ["resolved", events]; }
              catch (error) { return [error.message, events, Valor.detail.error]; }
            }"""
        )
        message, events, detail = outcome
        assert events == ["booting", "error"]
        assert "valor-0.1.0-py3-none-any.whl" in message and message == detail
    finally:
        context.close()
        server.shutdown()
        server.server_close()


def test_a_failed_boot_answers_503_at_once(browser: Browser, site: Site, tmp_path: Path) -> None:
    broken = tmp_path / "dist"
    shutil.copytree(site.folder, broken)
    server = serve(broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        # A first boot works, so the service worker intercepts the plug-ins' prefixes.
        page = start_page(context, server.url, timeout=20_000)
        # The next boot fails: the plug-ins' files the runtime loads are gone from the site, and
        # from the service worker's copy of them (which would otherwise boot the tab offline).
        page.evaluate(
            """async () => {
              for (const key of await caches.keys()) {
                if (key.startsWith("valor-files")) await caches.delete(key);
              }
            }"""
        )
        (broken / "plugins.zip").unlink()
        page.reload()
        status, body, waited = page.evaluate(
            """async () => {
              try { await Valor.start({timeout: 20000}); } catch (error) {}
              const started = performance.now();
              const r = await fetch("hello");
              return [r.status, await r.json(), performance.now() - started];
            }"""
        )
        assert status == 503, body
        assert "failed to boot" in body["detail"] and "plugins.zip" in body["detail"]
        assert waited < 5000, "answered at once, not after the 20 s timeout"
    finally:
        context.close()
        server.shutdown()
        server.server_close()


def test_a_plugin_that_blocks_the_worker_gets_it_restarted(
    browser: Browser, tmp_path: Path
) -> None:
    source = tmp_path / "plugins"
    source.mkdir()
    (source / "spin.py").write_text(
        "from valor import vlugin\n\n@vlugin\ndef on_request(req):\n    while True:\n        pass\n"
    )
    (source / "hello.py").write_text((MANIFEST.parent / "hello.py").read_text())
    (source / "plugins.json").write_text(
        json.dumps(
            {
                "plugins": [
                    {"name": "spin", "type": "python", "path": "spin.py"},
                    {"name": "hello", "type": "python", "path": "hello.py"},
                ]
            }
        )
    )
    build(source / "plugins.json", tmp_path / "dist", quiet=True)
    (tmp_path / "dist" / "blank.html").write_text(BLANK_PAGE)
    server = serve(tmp_path / "dist")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = start_page(context, server.url, timeout=3000)
        stuck = fetch(page, server.url + "spin")
        assert stuck.status == 504
        # The page notices the worker no longer answers and starts a fresh one.
        page.wait_for_function("Valor.detail.restarts === 1 && Valor.status === 'ready'")
        answer = fetch(page, server.url + "hello")
        assert (answer.status, answer.body) == (200, b"Hello Plugin!")
    finally:
        context.close()
        server.shutdown()
        server.server_close()
