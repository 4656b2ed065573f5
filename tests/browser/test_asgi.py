"""Existing ASGI apps answer the same in both hosts: every case of the asgi table (the
Starlette and FastAPI examples) is sent to a real ``valor serve`` and to the browser bundle in
Chromium, and the two answers are compared in full: status, reason, headers and body bytes."""

from __future__ import annotations

import base64

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import Site
from tests.cases import ASGI_CASES, Answer, Case, compare_cases
from tests.servers import Server, http_send
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


def test_starlette_and_fastapi_apps_answer_the_same_in_both_hosts(
    server: Server, runtime_page: Page, site: Site
) -> None:
    browser = browser_send_with_reason(runtime_page, site)
    origins = (server.url, site.url.rstrip("/"))
    compare_cases(http_send(server.url), browser, origins, ASGI_CASES)
