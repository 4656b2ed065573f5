"""One plug-in file, two hosts, the same answers: every request goes to a real ``valor serve``
and, through Chromium's ``fetch()``, to the browser host, and the two answers must be equal in
all a page can see of them (status, reason, headers, body bytes). First the table of
differences once found, then Hypothesis-generated requests and answers.

The fuzz tests are bounded: ``VALOR_FUZZ_EXAMPLES`` examples each (default 60) and
``VALOR_FUZZ_SECONDS`` seconds each (default 60); under CI (``CI`` set) the examples come from a
fixed seed. ``VALOR_FUZZ_EXAMPLES=2000 pytest -m browser tests/browser/test_parity.py`` looks
harder.
"""

from __future__ import annotations

import json
import os
import time
from string import ascii_letters, digits
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from playwright.sync_api import Browser, Page

from tests.browser.conftest import Site, browser_send, fetch, start_page
from tests.cases import Answer, assert_same, compare_cases
from tests.parity.table import PARITY_CASES
from tests.servers import Server, http_answer, http_send

pytestmark = pytest.mark.browser

EXAMPLES = int(os.environ.get("VALOR_FUZZ_EXAMPLES", "60"))
SECONDS = float(os.environ.get("VALOR_FUZZ_SECONDS", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=bool(os.environ.get("CI")),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def parity_page(browser: Browser, parity_site: Site) -> Page:
    context = browser.new_context()
    page = start_page(context, parity_site.url)
    yield page
    context.close()


def origin(site: Site) -> str:
    return site.url[: -len(site.base)]


def test_the_differences_once_found_are_gone(
    parity_server: Server, parity_page: Page, parity_site: Site
) -> None:
    compare_cases(
        http_send(parity_server.url),
        browser_send(parity_page, parity_site),
        (parity_server.url, origin(parity_site)),
        PARITY_CASES,
    )


def test_set_cookie_reaches_server_clients_only(
    parity_server: Server, parity_page: Page, parity_site: Site
) -> None:
    # A service worker's answer cannot set cookies: the browser drops Set-Cookie from it (Fetch
    # standard). docs/plugins.md says so; everything else of the answer is the same.
    wanted = json.dumps({"headers": [["set-cookie", "flavour=oat; Path=/"], ["x-after", "1"]]})
    served = http_answer(httpx.post(parity_server.url + "/answer", content=wanted))
    browsed = fetch(parity_page, parity_site.url + "answer", "POST", body=wanted.encode())
    assert served.headers.getlist("set-cookie") == ["flavour=oat; Path=/"]
    assert "set-cookie" not in browsed.headers
    assert "flavour" not in parity_page.evaluate("document.cookie")
    assert_same(served, browsed, (parity_server.url, origin(parity_site)), "set-cookie")


# -- Hypothesis ----------------------------------------------------------------------------

# Characters both clients (httpx and Chromium's URL parser) send as they are.
PATH_CHARS = ascii_letters + digits + "-._~!$&'()*+,;=:@"
QUERY_CHARS = ascii_letters + digits + "-._~!$&()*+,;=:@/?"
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_.!#$%&'*+^`|~"
VISIBLE_LATIN1 = "".join(chr(c) for c in [*range(0x20, 0x7F), *range(0xA0, 0x100)])

escapes = st.integers(0, 255).map(lambda byte: f"%{byte:02X}")
segments = (
    st.lists(st.sampled_from(PATH_CHARS) | escapes, max_size=6)
    .map("".join)
    .filter(lambda s: unquote(s).lower() not in (".", ".."))  # both clients drop dot segments
)
queries = st.lists(st.sampled_from(QUERY_CHARS) | escapes, max_size=12).map("".join)
header_names = st.sampled_from(["x-fa", "x-fb", "x-fc"]) | st.text(NAME_CHARS, max_size=6).map(
    lambda s: "x-f" + s
)
# Request header values in ASCII: Chromium hands a service worker a value with any byte past
# ASCII as "" (docs/wire-format.md). No spaces or tabs at either end: both hosts trim them.
header_values = st.text(VISIBLE_LATIN1[:95] + "\t", max_size=16).map(lambda s: s.strip(" \t"))
latin1_values = st.text(VISIBLE_LATIN1, max_size=16)
bodies = st.none() | st.binary(max_size=64)


@st.composite
def requests(draw: st.DrawFn) -> dict:
    """A request to the echo plug-in (the raw wire message) or the request plug-in (what a
    decorated handler sees)."""
    method = draw(st.sampled_from(["GET", "HEAD", "DELETE", "OPTIONS", "POST", "PUT", "PATCH"]))
    path = "/" + draw(st.sampled_from(["echo", "request"]))
    path += "".join("/" + s for s in draw(st.lists(segments, max_size=4)))
    query = draw(queries)
    headers = draw(st.lists(st.tuples(header_names, header_values), max_size=5))
    body = draw(bodies) if method in ("POST", "PUT", "PATCH") else None
    return {"method": method, "target": path + ("?" + query if query else ""),
            "headers": headers, "body": body}  # fmt: skip


GOOD_NAMES = ["x-a", "X-Multi", "link", "cache-control", "content-type", "vary", "etag"]
ODD_NAMES = ["x-correlation-id", "x-valor-plugin", "content-length", "bad name", "x-€", ""]
FINAL_STATUSES = [200, 201, 202, 204, 205, 206, 299, 304, 400, 403, 404, 409, 410, 418, 422]
FINAL_STATUSES += [429, 451, 499, 500, 501, 502, 503, 504, 599]
statuses = st.sampled_from(FINAL_STATUSES) | st.sampled_from([100, 101, 103, 199, 600, 0])
answer_values = latin1_values | st.sampled_from(["10 €", "a\nb", "a\x00b", " padded ", "\t"])


@st.composite
def answers(draw: st.DrawFn) -> dict:
    """What the answer plug-in is asked to answer: a status, headers and a body, sometimes
    invalid (the runtime must turn those into the same 500 in both hosts)."""
    names = st.sampled_from(GOOD_NAMES) | header_names
    if draw(st.booleans()):
        names = names | st.sampled_from(ODD_NAMES)
    wanted: dict = {
        "status": draw(statuses),
        "headers": draw(st.lists(st.tuples(names, answer_values).map(list), max_size=6)),
        "body": draw(st.none() | st.text(VISIBLE_LATIN1 + "\n\t", max_size=40)),
    }
    return wanted


def send_both(
    server: Server, page: Page, site: Site, request: dict, request_id: str
) -> tuple[Answer, Answer]:
    headers = [*request["headers"], ("x-request-id", request_id)]
    url = httpx.URL(server.url + request["target"])
    served = http_answer(
        httpx.request(
            request["method"],
            url,
            headers=[(n.encode(), v.encode("latin-1")) for n, v in headers],
            content=request["body"],
            timeout=10,
        )
    )
    browsed = fetch(
        page,
        site.url + request["target"].lstrip("/"),
        request["method"],
        [list(pair) for pair in headers],
        request["body"],
    )
    return served, browsed


class Budget:
    """Stops sending after ``SECONDS`` (the remaining examples pass without a request)."""

    def __init__(self) -> None:
        self.ends = time.monotonic() + SECONDS

    def spent(self) -> bool:
        return time.monotonic() > self.ends


def test_fuzz_requests(parity_server: Server, parity_page: Page, parity_site: Site) -> None:
    budget = Budget()
    origins = (parity_server.url, origin(parity_site))

    @FUZZ
    @given(request=requests())
    def check(request: dict) -> None:
        if budget.spent():
            return
        served, browsed = send_both(parity_server, parity_page, parity_site, request, "fuzz")
        where = f"{request['method']} {request['target']} {request['headers']}"
        assert_same(served, browsed, origins, where)
        if request["method"] != "HEAD" and served.status == 200:
            # The harness sent what it meant to: the plug-in saw the target as generated.
            path, mark, query = request["target"].partition("?")
            below = path[len("/echo") if path.startswith("/echo") else len("/request") :]
            assert json.loads(served.body)["url"].endswith((below or "/") + mark + query)

    check()


def test_fuzz_answers(parity_server: Server, parity_page: Page, parity_site: Site) -> None:
    budget = Budget()
    origins = (parity_server.url, origin(parity_site))

    @FUZZ
    @given(
        wanted=answers(),
        method=st.sampled_from(["POST", "PUT", "PATCH"]),
        target=st.sampled_from(["/answer", "/js-answer"]),  # a Python and a JS plug-in
    )
    def check(wanted: dict, method: str, target: str) -> None:
        if budget.spent():
            return
        request = {"method": method, "target": target, "headers": [],
                   "body": json.dumps(wanted).encode()}  # fmt: skip
        served, browsed = send_both(parity_server, parity_page, parity_site, request, "fuzz")
        assert_same(served, browsed, origins, f"{method} {target} answering {wanted!r}")

    check()
