"""Existing ASGI apps answer the same in both hosts: every case of the asgi table (the
Starlette and FastAPI examples) is sent to a real ``valor serve`` and to the browser bundle in
Chromium, and the two answers are compared in full: status, reason, headers and body bytes."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import Site, site_for, start_page
from tests.browser.test_streaming import READ_HELD
from tests.cases import ASGI_CASES, Answer, Case, compare_cases
from tests.servers import ASGI_MANIFEST, Server, http_send, valor_server
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
def asgi_page(browser: Browser, asgi_site: Site) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield start_page(context, asgi_site.url)
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
