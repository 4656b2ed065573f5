"""The shared request table: one list of requests and what every host must answer.

A host's test sends each case with its own ``send`` (httpx against the server, ``fetch`` in
Chromium for the browser) and calls ``case.check(answer)``. The table runs in order against a
freshly loaded ``plugins/plugins.json``; cases never depend on ids a previous run created.
``compare_cases`` sends each case to two hosts, checks both and compares the answers in full.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from valor.headers import Headers

TEXT = "text/plain; charset=utf-8"


@dataclass
class Answer:
    status: int
    headers: Headers
    body: bytes
    reason: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    plugin: str | None = None
    """The expected ``x-valor-plugin``; ``None`` means the answer must not carry one."""
    text: str | None = None
    json_subset: dict[str, Any] | None = None
    detail_contains: str | None = None
    expect_headers: dict[str, str] = field(default_factory=dict)
    extra: Callable[[Answer], None] | None = None
    varies: str | None = None
    """A pattern for what differs between hosts by design (a random id), masked in comparisons."""

    def check(self, answer: Answer) -> None:
        where = f"{self.id}: {self.method} {self.path}"
        assert answer.status == self.status, (
            f"{where}: status {answer.status}, {answer.body[:300]!r}"
        )
        # Each message shows the whole answer: a failure in CI must explain itself.
        where = f"{where}: {answer.status} {dict(answer.headers.items())} {answer.body[:300]!r}"
        assert answer.headers.get("x-valor-plugin") == self.plugin, where
        expected_id = self.headers.get("x-request-id")
        correlation_id = answer.headers.get("x-correlation-id")
        assert correlation_id, f"{where}: no x-correlation-id"
        if expected_id:
            assert correlation_id == expected_id, where
        if self.text is not None:
            assert answer.body.decode() == self.text, f"{where}: body {answer.body[:300]!r}"
        if self.json_subset is not None or self.detail_contains is not None:
            assert answer.headers.get("content-type", "").startswith("application/json"), where
            data = answer.json()
            for key, value in (self.json_subset or {}).items():
                assert data.get(key) == value, f"{where}: {key}={data.get(key)!r} in {data}"
            if self.detail_contains is not None:
                assert self.detail_contains in str(data.get("detail")), f"{where}: {data}"
        for name, value in self.expect_headers.items():
            assert answer.headers.get(name) == value, f"{where}: {name}: {answer.headers.get(name)}"
        if self.extra is not None:
            self.extra(answer)


# An added note's id, from the store's counter: how many notes the host added before differs.
NOTE_ID = r'(?<=/notes/)[0-9]+|(?<="id": )[0-9]+'


def _echo_url(answer: Answer) -> None:
    assert answer.headers["x-echo-url"].endswith("/x/y?z=1&z=2"), answer.headers
    assert "/echo" not in answer.headers["x-echo-url"], "the prefix must be stripped"


def _has_error_id(answer: Answer) -> None:
    assert len(answer.json()["error_id"]) == 12


def _notes_listed(answer: Answer) -> None:
    texts = [note["text"] for note in answer.json()["notes"]]
    assert "Try POST /notes" in texts, texts


def _note_created(answer: Answer) -> None:
    note = answer.json()
    assert answer.headers["location"] == f"/notes/{note['id']}"


CASES: list[Case] = [
    Case(
        "hello",
        "GET",
        "/hello",
        200,
        plugin="hello",
        text="Hello Plugin!",
        expect_headers={"content-type": TEXT},
    ),
    Case("hello-subpath", "GET", "/hello/any/sub/path", 200, plugin="hello", text="Hello Plugin!"),
    Case(
        "hello-post", "POST", "/hello", 200, body=b"ignored", plugin="hello", text="Hello Plugin!"
    ),
    Case("prefix-boundary", "GET", "/hellothere", 404, detail_contains="/hellothere"),
    Case(
        "correlation-id",
        "GET",
        "/hello",
        200,
        headers={"x-request-id": "req-42"},
        plugin="hello",
        text="Hello Plugin!",
    ),
    Case("greeter", "GET", "/greeter?who=Bob", 200, plugin="greeter", text="Alice says hello Bob!"),
    Case(
        "greeter-missing-who",
        "GET",
        "/greeter",
        400,
        plugin="greeter",
        json_subset={"status": 400, "error": "Bad Request"},
        detail_contains="'who'",
    ),
    Case(
        "echo",
        "PUT",
        "/echo/x/y?z=1&z=2",
        200,
        headers={"content-type": "text/x-demo"},
        body="héllo".encode(),
        plugin="echo",
        text="héllo",
        expect_headers={"content-type": "text/x-demo", "x-echo-method": "PUT"},
        extra=_echo_url,
    ),
    Case("notes-list", "GET", "/notes", 200, plugin="notes", extra=_notes_listed),
    Case(
        "notes-add",
        "POST",
        "/notes",
        201,
        headers={"content-type": "application/json"},
        body=b'{"text": "buy milk"}',
        plugin="notes",
        json_subset={"text": "buy milk"},
        extra=_note_created,
        varies=NOTE_ID,
    ),
    Case(
        "notes-bad-json",
        "POST",
        "/notes",
        400,
        body=b"{not json",
        plugin="notes",
        detail_contains="not valid JSON",
    ),
    Case(
        "notes-no-text",
        "POST",
        "/notes",
        400,
        body=b'{"title": "x"}',
        plugin="notes",
        detail_contains="'text'",
    ),
    Case("notes-unknown", "GET", "/notes/999", 404, plugin="notes", detail_contains="999"),
    Case("notes-method", "PATCH", "/notes/1", 405, body=b"{}", plugin="notes"),
    Case(
        "not-found",
        "GET",
        "/nope/x",
        404,
        json_subset={"status": 404, "error": "Not Found"},
        detail_contains="/nope/x",
    ),
    # Each host names its own store (the server's SQLite file, the tab's store).
    Case(
        "health", "GET", "/_health", 200, json_subset={"status": "ok"}, varies=r'"store": "[^"]*"'
    ),
    Case(
        "plugin-raises",
        "GET",
        "/faulty/raise",
        500,
        plugin="faulty",
        detail_contains="'faulty' raised",
        extra=_has_error_id,
    ),
    Case(
        "plugin-hangs",
        "GET",
        "/faulty/hang",
        504,
        plugin="faulty",
        detail_contains="did not answer within 2 seconds",
    ),
    Case("still-serving", "GET", "/faulty/ok", 200, plugin="faulty", text="still serving"),
]

SendFunction = Callable[[Case], Answer]

# Added by each HTTP server itself, not part of an answer: framing, and uvicorn's date and
# server (a service worker's answer has neither).
NOT_COMPARED = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}
_ERROR_ID = re.compile(rb'"error_id": "[0-9a-f]{12}"')


def fetch_view(pairs: Iterable[Iterable[str]]) -> list[tuple[str, str]]:
    """Header pairs as ``fetch()`` shows them to a page: names in lower case and sorted, a
    repeated name's values joined by ", " in the order they came (set-cookie is never shown).
    Order and repeats stay checkable: ``[a: 1, b: 2, a: 3]`` shows as ``a: "1, 3"`` then ``b``.
    This is all a page can see of an answer's headers, so both hosts are compared in it."""
    combined: dict[str, list[str]] = {}
    for name, value in pairs:
        lower = name.lower()
        if lower != "set-cookie" and lower not in NOT_COMPARED:
            combined.setdefault(lower, []).append(value)
    # Chromium trims a joined value's ends too: two empty values show as ",".
    return [(name, ", ".join(combined[name]).strip(" \t")) for name in sorted(combined)]


def comparable(
    answer: Answer, origin: str, varies: str | None = None
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """What must be equal between hosts: the host's own origin (its address) becomes ORIGIN
    (HOST without the scheme), and the values that are random or differ by design (a generated
    correlation id, an error id, ``x-valor-host``) marks."""
    host = origin.partition("://")[2]  # as in x-forwarded-host
    headers = []
    for name, value in fetch_view(answer.headers.raw()):
        if name == "x-correlation-id" and len(value) == 32:
            value = "<generated id>"
        elif name == "x-valor-host":  # the one header that differs by design: who answered
            assert value in ("server", "browser"), f"x-valor-host: {value!r}"
            value = "<host>"
        headers.append((name, value.replace(origin, "ORIGIN").replace(host, "HOST")))
    body = answer.body.replace(origin.encode(), b"ORIGIN").replace(host.encode(), b"HOST")
    if varies is not None:
        headers = [(name, re.sub(varies, "<varies>", value)) for name, value in headers]
        body = re.sub(varies.encode(), b"<varies>", body)
    return answer.status, answer.reason, headers, _ERROR_ID.sub(b'"error_id": "<id>"', body)


def assert_same(
    first: Answer, second: Answer, origins: tuple[str, str], where: str, varies: str | None = None
) -> None:
    """Both hosts gave the same answer: status, reason, headers and body bytes (``varies``
    masked)."""
    a, b = comparable(first, origins[0], varies), comparable(second, origins[1], varies)
    assert a == b, f"{where}: the hosts answered differently:\n  {a!r:.1500}\n  {b!r:.1500}"
    assert len(first.headers.getlist("x-correlation-id")) == 1, f"{where}: {first.headers}"


def compare_cases(
    first: SendFunction,
    second: SendFunction,
    origins: tuple[str, str],
    cases: list[Case] = CASES,
    not_compared: Collection[str] = (),
) -> None:
    """Send every case to two hosts; check each answer and compare the two in full (except the
    cases named in ``not_compared``, which only are checked). A case without an
    ``x-request-id`` gets one, the same for both, so the plug-ins see the same."""
    failures = []
    for case in cases:
        if "x-request-id" not in case.headers:
            case = replace(case, headers={**case.headers, "x-request-id": f"compare-{case.id}"})
        try:
            one, two = first(case), second(case)
            case.check(one)
            case.check(two)
            if case.id not in not_compared:
                assert_same(one, two, origins, case.id, case.varies)
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


def run_cases(send: SendFunction, cases: list[Case] = CASES) -> None:
    """Send every case in order and check each answer; report all failures at once."""
    failures = []
    for case in cases:
        try:
            case.check(send(case))
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, "\n".join(failures)


# -- existing ASGI apps (type "asgi"), mounted by plugins/asgi.json: plugins/board.py (Starlette)
# and plugins/shop.py (FastAPI)

JSON_TYPE = {"content-type": "application/json"}


def _json_equals(expected: Any):
    def check(answer: Answer) -> None:
        assert answer.json() == expected, answer.body[:300]

    return check


def _board_where(answer: Answer) -> None:
    data = answer.json()
    assert data["url"].endswith("/board/where?a=1&b=2"), data
    assert data["root_path"].endswith("/board") and data["query"] == {"a": "1", "b": "2"}, data


def _board_echo(answer: Answer) -> None:
    assert answer.json() == {"echo": {"text": "hi"}}
    assert answer.headers["location"].endswith("/board/posts/1"), answer.headers


def _validation_error(*locations: list[Any]):
    def check(answer: Answer) -> None:
        assert [error["loc"] for error in answer.json()["detail"]] == list(locations)

    return check


DUNE = {"id": 1, "title": "Dune", "author": "Frank Herbert", "year": 1965}


def _servers_are(answer: Answer, root_path: str) -> None:
    assert answer.json()["servers"] == [{"url": root_path}], answer.body[:300]


ASGI_CASES: list[Case] = [
    Case("board-hello", "GET", "/board", 200, plugin="board", text="Hello from Starlette!",
         expect_headers={"content-type": TEXT}),
    Case("board-head", "HEAD", "/board/", 200, plugin="board", text="",
         expect_headers={"content-type": TEXT}),
    Case("board-post", "GET", "/board/posts/1", 200, plugin="board",
         extra=_json_equals({"number": 1, "text": "Welcome to the board"})),
    Case("board-no-post", "GET", "/board/posts/7", 404, plugin="board",
         extra=_json_equals({"error": "no post 7"})),
    Case("board-no-route", "GET", "/board/nope", 404, plugin="board", text="Not Found"),
    Case("board-where", "GET", "/board/where?a=1&b=2", 200, plugin="board", extra=_board_where),
    Case("board-echo", "POST", "/board/echo", 200, headers=JSON_TYPE, body=b'{"text": "hi"}',
         plugin="board", extra=_board_echo),
    Case("board-method", "PUT", "/board/echo", 405, plugin="board", text="Method Not Allowed",
         expect_headers={"allow": "POST"}),
    Case("shop-hello", "GET", "/shop", 200, plugin="shop", text="Hello from FastAPI!",
         headers={"x-request-id": "shop-1"}),
    Case("shop-item", "GET", "/shop/items/1", 200, plugin="shop",
         extra=_json_equals({"id": 1, "name": "apple"})),
    Case("shop-item-detail", "GET", "/shop/items/1?detail=true", 200, plugin="shop",
         extra=_json_equals({"id": 1, "name": "apple", "price": 0.5, "tags": ["fruit"]})),
    Case("shop-no-item", "GET", "/shop/items/9", 404, plugin="shop",
         extra=_json_equals({"detail": "no item 9"})),
    Case("shop-bad-path", "GET", "/shop/items/abc", 422, plugin="shop",
         extra=_validation_error(["path", "item_id"])),
    Case("shop-bad-query", "GET", "/shop/items/1?detail=maybe", 422, plugin="shop",
         extra=_validation_error(["query", "detail"])),
    Case("shop-put", "PUT", "/shop/items/2", 200, headers=JSON_TYPE,
         body=b'{"name": "pear", "price": 2}', plugin="shop",
         extra=_json_equals({"id": 2, "name": "pear", "price": 2.0, "tags": []})),
    Case("shop-bad-body", "PUT", "/shop/items/3", 422, headers=JSON_TYPE,
         body=b'{"name": "", "price": -1}', plugin="shop",
         extra=_validation_error(["body", "name"], ["body", "price"])),
    # plugins/readinglist: a FastAPI app laid out as a package, its endpoints and dependencies
    # plain ``def`` functions (a thread on the server, inline in the browser)
    Case("readinglist-hello", "GET", "/readinglist", 200, plugin="readinglist",
         extra=_json_equals({"hello": "readers", "root_path": "/readinglist",
                             "client": "127.0.0.1"})),
    Case("readinglist-books", "GET", "/readinglist/books", 200, plugin="readinglist",
         extra=_json_equals({"books": [DUNE]})),
    Case("readinglist-book", "GET", "/readinglist/books/1", 200, plugin="readinglist",
         extra=_json_equals(DUNE)),
    Case("readinglist-no-book", "GET", "/readinglist/books/9", 404, plugin="readinglist",
         extra=_json_equals({"detail": "no book 9"})),
    Case("readinglist-add", "POST", "/readinglist/books", 201, headers=JSON_TYPE,
         body=b'{"title": "Emma", "author": "Jane Austen", "year": 1815}', plugin="readinglist",
         extra=_json_equals({"id": 2, "title": "Emma", "author": "Jane Austen", "year": 1815})),
    Case("readinglist-bad-book", "POST", "/readinglist/books", 422, headers=JSON_TYPE,
         body=b'{"title": "", "author": "A", "year": 0}', plugin="readinglist",
         extra=_validation_error(["body", "title"], ["body", "year"])),
    Case("readinglist-csv", "GET", "/readinglist/books.csv?rows=3", 200, plugin="readinglist",
         text="number,title\n1,book 1\n2,book 2\n3,book 3\n",
         expect_headers={"content-type": "text/csv; charset=utf-8"}),
    # The app sees the client's headers only; the request id reaches it in the scope.
    Case("readinglist-headers", "GET", "/readinglist/headers", 200, plugin="readinglist",
         headers={"x-token": "a", "x-request-id": "rl-1"},
         extra=_json_equals({"x_token": ["a"], "x-request-id": "rl-1",
                             "x-forwarded-prefix": None, "valor": {"request_id": "rl-1"}})),
    Case("readinglist-openapi", "GET", "/readinglist/openapi.json", 200, plugin="readinglist",
         extra=lambda answer: _servers_are(answer, "/readinglist")),
]  # fmt: skip
