"""Every plug-in kind in the browser host, in real Chromium: the same per-kind table as the
server (one table, two hosts), plus load errors and the registry. Native plug-ins cannot run in
a browser: the build leaves them out and the registry refuses them with a clear error."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import BLANK_PAGE, Site, browser_send, fetch, start_page
from tests.cases import compare_cases, run_cases
from tests.kinds import conftest as kinds
from tests.kinds.table import (
    BROWSER_KINDS,
    BROWSER_RUST_MOUNTS,
    failure_cases,
    hello_cases,
    rust_cases,
)
from tests.servers import Server, http_send
from valor.build import build, serve

pytestmark = pytest.mark.browser
# The kinds' fixtures (a real upstream, the built plug-ins) are shared with the server tests.
upstream = kinds.upstream
kinds_site = kinds.kinds_site
kinds_server = kinds.kinds_server


@pytest.fixture(scope="module")
def kinds_bundle(tmp_path_factory: pytest.TempPathFactory, kinds_site: Path) -> Iterator[Site]:
    """The kinds manifest (every kind, examples and fixtures) bundled and served."""
    folder = tmp_path_factory.mktemp("kinds-site") / "dist"
    build(kinds_site / "plugins.json", folder, quiet=True)
    (folder / "blank.html").write_text(BLANK_PAGE)
    server = serve(folder, "/")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(server.url, "/", folder)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def kinds_page(browser: Browser, kinds_bundle: Site) -> Iterator[Page]:
    context = browser.new_context()
    page = start_page(context, kinds_bundle.url)
    yield page
    context.close()


def post_plugin(page: Page, site: Site, definition: dict) -> tuple[int, dict]:
    import json

    answer = fetch(
        page,
        site.url + "_plugins",
        "POST",
        {"content-type": "application/json"},
        json.dumps(definition).encode(),
    )
    return answer.status, answer.json()


def test_a_native_plugin_left_out_of_the_bundle_answers_why(
    kinds_page: Page, kinds_bundle: Site
) -> None:
    # The build leaves it out; its prefix still reaches the runtime, which names the reason
    # (not the static host's HTML 404), and /_health and Valor.detail list it as failed.
    mounted = kinds_page.evaluate("Valor.prefixes")
    assert "/js" in mounted and "/native" in mounted and "/native-faulty" in mounted
    answer = fetch(kinds_page, kinds_bundle.url + "native/hello?x=1")
    assert answer.status == 503, answer
    assert answer.headers["x-valor-plugin"] == "native"
    detail = answer.json()["detail"]
    assert "plug-in 'native' failed to load" in detail and "a browser cannot load" in detail
    failed = fetch(kinds_page, kinds_bundle.url + "_health").json()["failed"]
    assert {"native", "native-faulty"} <= {entry["name"] for entry in failed}
    failures = kinds_page.evaluate("Valor.loaded().then((state) => state.failures)")
    assert any("plug-in 'native' failed to load" in failure for failure in failures)


@pytest.mark.parametrize("kind", BROWSER_KINDS)
def test_shared_table_per_kind(
    kinds_page: Page, kinds_bundle: Site, kinds_server: Server, kind: str
) -> None:
    # Each answer is compared with the server's in full; a crash's or a trap's detail names
    # the engine's own message (Deno or V8, wasmtime or V8), so failures are only checked.
    sends = (http_send(kinds_server.url), browser_send(kinds_page, kinds_bundle))
    origins = (kinds_server.url, kinds_bundle.url.rstrip("/"))
    compare_cases(*sends, origins, hello_cases(kind))
    run_cases(browser_send(kinds_page, kinds_bundle), failure_cases(kind))


@pytest.mark.parametrize("mount", BROWSER_RUST_MOUNTS)
def test_rust_plugins(kinds_page: Page, kinds_bundle: Site, mount: str) -> None:
    run_cases(browser_send(kinds_page, kinds_bundle), rust_cases(mount))


@pytest.mark.parametrize("kind", BROWSER_KINDS)
def test_registry_adds_a_plugin_at_run_time(
    kinds_page: Page, kinds_bundle: Site, upstream: str, kind: str
) -> None:
    name = f"{kind}-added"
    source = {"url": upstream} if kind == "proxy" else {"path": kinds.EXAMPLES[kind]}
    status, body = post_plugin(
        kinds_page, kinds_bundle, {"name": name, "type": kind, "prefix": f"/added-{kind}", **source}
    )
    assert status == 201, body
    run_cases(browser_send(kinds_page, kinds_bundle), hello_cases(kind, name, f"/added-{kind}"))


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("js", "SyntaxError"),
        ("wasm", "is not a valid WebAssembly module"),
        ("wasi", "is not a valid WebAssembly module"),
        ("native", "a browser cannot load"),
    ],
)
def test_a_bad_module_is_a_load_error_naming_the_plugin(
    kinds_page: Page, kinds_bundle: Site, kind: str, reason: str
) -> None:
    name = f"{kind}-bad"
    status, body = post_plugin(
        kinds_page, kinds_bundle, {"name": name, "type": kind, "path": kinds.GARBAGE[kind][0]}
    )
    assert status == 400, body
    assert repr(name) in body["detail"] and reason in body["detail"], body


def test_js_worker_has_timers_crypto_and_fetch(
    kinds_page: Page, kinds_bundle: Site, upstream: str
) -> None:
    import hashlib

    answer = fetch(
        kinds_page, kinds_bundle.url + "js-faulty/later", headers={"x-upstream": upstream}
    )
    assert answer.status == 200, answer.body
    data = answer.json()
    assert len(data["uuid"]) == 36
    assert data["sha256"] == hashlib.sha256(b"valor").hexdigest()
    assert data["fetched"] == "Hello Plugin!"


def test_wasi_exit_code_is_a_500(kinds_page: Page, kinds_bundle: Site) -> None:
    answer = fetch(kinds_page, kinds_bundle.url + "wasi-faulty/exit")
    assert answer.status == 500 and "exited with code 3" in answer.json()["detail"]


def test_wasm_memory_cap(kinds_page: Page, kinds_bundle: Site) -> None:
    """As on the server: past the cap the module's memory.grow fails (its malloc returns NULL
    and this fixture traps), before the module could use the memory."""
    answer = fetch(kinds_page, kinds_bundle.url + "wasm-faulty/big")
    assert answer.status == 500 and "trapped" in answer.json()["detail"], answer.body
    assert fetch(kinds_page, kinds_bundle.url + "wasm-faulty").body == b"Hello Plugin!"


@pytest.mark.parametrize("kind", ["wasm", "wasi"])
def test_a_timed_out_call_fails_only_itself(
    kinds_page: Page, kinds_bundle: Site, kind: str
) -> None:
    """A call queued behind one that hangs is answered once the hung one times out (its
    executor is restarted for it), not failed with it."""
    statuses = kinds_page.evaluate(
        """async ([base, kind]) => {
            const hang = fetch(`${base}${kind}-faulty/hang`);
            await new Promise((resolve) => setTimeout(resolve, 500));
            const queued = fetch(`${base}${kind}-faulty/`);
            const [hung, answered] = await Promise.all([hang, queued]);
            return [hung.status, answered.status, await answered.text()];
        }""",
        [kinds_bundle.url, kind],
    )
    assert statuses == [504, 200, "Hello Plugin!"]


def test_rust_plugins_answer_the_same_in_both_hosts(
    kinds_page: Page, kinds_bundle: Site, kinds_server: Server
) -> None:
    """The Rust examples built to wasm: every request of their table answered by the server
    and by the browser, compared in full (status, reason, headers, body bytes)."""
    sends = (http_send(kinds_server.url), browser_send(kinds_page, kinds_bundle))
    origins = (kinds_server.url, kinds_bundle.url.rstrip("/"))
    # A hang's 504 names the same timeout, after it: not worth two more seconds.
    cases = [case for case in rust_cases("rust-wasm") if not case.path.endswith("/hang")]
    # A trap's detail quotes the engine's own words (wasmtime or V8): that case is only checked.
    compare_cases(*sends, origins, cases, not_compared={"rust-wasm-panic"})
