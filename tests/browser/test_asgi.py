"""Existing ASGI apps answer the same in both hosts: every case of the asgi table (the
Starlette and FastAPI examples) is sent to a real ``valor serve`` and to the browser bundle in
Chromium, and the two answers are compared in full: status, reason, headers and body bytes."""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import START, Site, fetch, served, site_for, start_page
from tests.browser.test_streaming import READ_HELD
from tests.cases import ASGI_CASES, Answer, Case, compare_cases
from tests.servers import ASGI_MANIFEST, Server, http_send, valor_server
from valor.build import serve
from valor.headers import Headers
from valor.testing.hosts import FETCH

pytestmark = pytest.mark.browser

FETCH_WITH_REASON = FETCH.replace(
    "return {status: response.status,",
    "return {status: response.status, reason: response.statusText,",
)


def browser_send_with_reason(page: Page, site: Site):
    def send(case: Case) -> Answer:
        body = None if case.body is None else base64.b64encode(case.body).decode()
        result = page.evaluate(
            FETCH_WITH_REASON,
            {"url": site.url + case.path.lstrip("/"), "method": case.method,
             "headers": case.headers, "body": body},
        )  # fmt: skip
        headers = Headers(result["headers"])
        return Answer(result["status"], headers, base64.b64decode(result["body"]), result["reason"])

    return send


@pytest.fixture(scope="module")
def asgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``valor serve plugins/asgi.json``."""
    with valor_server(ASGI_MANIFEST, log_dir=tmp_path_factory.mktemp("asgi")) as running:
        yield running


@pytest.fixture(scope="module")
def asgi_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """``plugins/asgi.json`` bundled, FastAPI and Pydantic's compiled core included."""
    yield from site_for(tmp_path_factory, "/", ASGI_MANIFEST)


@pytest.fixture(scope="module")
def console() -> list[str]:
    """What the runtime tab's console showed (the runtime worker's included)."""
    return []


@pytest.fixture(scope="module")
def asgi_page(browser: Browser, asgi_site: Site, console: list[str]) -> Iterator[Page]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.on("console", lambda message: console.append(message.text))
        page.goto(asgi_site.url + "blank.html")
        page.evaluate(START, {})
        yield page
    finally:
        context.close()


def test_fastapi_and_pydantic_are_in_the_memory_snapshot(asgi_page: Page, asgi_site: Site) -> None:
    snapshot = json.loads((asgi_site.folder / "valor-bundle.json").read_text())["snapshot"]
    assert {"fastapi", "pydantic", "starlette.routing"} <= set(snapshot["modules"])
    # Pydantic's compiled core, loaded before the heap is restored, where the snapshot had it.
    [library] = snapshot["dynlibs"]
    assert library.startswith("pydantic_core/") and library.endswith(".so")
    assert snapshot["tables"][0] > 0 and snapshot["handles"][library]
    detail = asgi_page.evaluate("Valor.detail")
    assert detail["snapshot"] is True and detail["warnings"] == []


def test_a_snapshot_whose_libraries_do_not_fit_is_skipped_with_a_warning(
    browser: Browser, asgi_site: Site, tmp_path: Path
) -> None:
    folder = tmp_path / "dist"
    shutil.copytree(asgi_site.folder, folder)
    info = json.loads((folder / "valor-bundle.json").read_text())
    info["snapshot"]["tables"] = [1]  # as if made by a Pyodide with a shorter function table
    (folder / "valor-bundle.json").write_text(json.dumps(info))
    context = browser.new_context()
    try:
        with served(serve(folder)) as server:
            page = start_page(context, server.url)
            detail = page.evaluate("Valor.detail")
            assert detail["status"] == "ready" and detail["snapshot"] is False
            [warning] = detail["warnings"]
            assert "memory snapshot snapshot.bin was skipped" in warning
            assert "the function table has" in warning and "booted without it" in warning
            answer = fetch(page, server.url + "shop/items/1")
            assert (answer.status, answer.body) == (200, b'{"id":1,"name":"apple"}')
    finally:
        context.close()


def test_starlette_and_fastapi_apps_answer_the_same_in_both_hosts(
    asgi_page: Page, asgi_server: Server, asgi_site: Site
) -> None:
    in_browser = browser_send_with_reason(asgi_page, asgi_site)
    origins = (asgi_server.url, asgi_site.url.rstrip("/"))
    compare_cases(http_send(asgi_server.url), in_browser, origins, ASGI_CASES)


def test_a_streaming_starlette_answer_streams(asgi_page: Page, asgi_site: Site) -> None:
    # The last part is held until the page releases it: a host that buffered would stall.
    urls = {
        "stream": asgi_site.url + "board/count?to=3&hold=1",
        "release": asgi_site.url + "board/release",
    }
    result = asgi_page.evaluate(READ_HELD, urls)
    assert "3" not in result["beforeRelease"], result
    assert result["text"].count("\n") >= 3 and "3" in result["text"], result
    assert result["type"].startswith("text/plain")


READ_PARTS = """async (url) => {
  const response = await fetch(url);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "", parts = 0;
  for (let part = await reader.read(); !part.done; part = await reader.read()) {
    text += decoder.decode(part.value, {stream: true});
    parts++;
  }
  return {text, parts};
}"""


@pytest.mark.timeout(120)
def test_many_small_parts_travel_together(asgi_page: Page, asgi_site: Site) -> None:
    # A FastAPI StreamingResponse of 20,000 rows from a sync generator: the rows ready in the
    # runtime worker go in one pull each time, so the page reads far fewer parts than rows.
    result = asgi_page.evaluate(READ_PARTS, asgi_site.url + "readinglist/books.csv?rows=20000")
    lines = result["text"].splitlines()
    assert len(lines) == 20001 and lines[-1] == "20000,book 20000", lines[-3:]
    assert result["parts"] < 200, result["parts"]


@pytest.mark.timeout(120)
def test_an_error_after_the_answer_is_in_the_console_with_its_error_id(
    asgi_page: Page, asgi_site: Site, console: list[str]
) -> None:
    answer = fetch(asgi_page, asgi_site.url + "readinglist/after")
    assert answer.status == 200 and answer.json() == {"answered": True}
    pattern = (
        r"plug-in 'readinglist' failed after its answer: RuntimeError: the background task "
        r"failed at readinglist/main\.py:\d+ \[error_id=[0-9a-f]{12}\]"
    )
    for _ in range(300):  # the task ends after the answer: wait for its line, 30 s at most
        logged = "\n".join(console)
        if re.search(pattern, logged) and "Traceback" in logged:
            break
        asgi_page.wait_for_timeout(100)
    else:
        raise AssertionError("\n".join(console[-30:]))
    assert "Task exception was never retrieved" not in "\n".join(console)
    # Valor.detail.errors has it too, with its traceback.
    errors = asgi_page.evaluate("Valor.detail.errors ?? []")
    after = [e for e in errors if "failed after its answer" in e["message"]]
    assert after and re.fullmatch("[0-9a-f]{12}", after[-1]["error_id"]), errors
    assert after[-1]["error_id"] in after[-1]["message"]
    assert "RuntimeError: the background task failed" in after[-1]["traceback"], after


@pytest.mark.timeout(120)
def test_fetch_joins_a_repeated_request_header(asgi_page: Page, asgi_site: Site) -> None:
    # fetch() itself joins repeated request headers (docs/kinds.md says so): the app gets one
    # value, where the server gives it two (tests/test_asgi_apps.py).
    answer = fetch(
        asgi_page,
        asgi_site.url + "readinglist/headers",
        headers=[["x-token", "foo"], ["x-token", "bar"]],
    )
    assert answer.json()["x_token"] == ["foo, bar"], answer.body
