"""The server's pass-through for ``asgi`` plug-ins answers exactly as the message path does.

Two real ``valor serve`` processes on 127.0.0.1 load the same manifest (the Starlette and
FastAPI examples, a probe app that shows the scope it gets and answers whatever it is asked
to, and an app mounted at ``/``): one passes requests straight to the apps, the other answers
them through the wire message (``VALOR_PASSTHROUGH=0``), as the browser host does. Every
answer is compared in full, as sent: status line, every header in order, body bytes; only
the date and random ids are masked. The cases cover the runtime's part of every request:
headers normalised for the app, answer headers checked and added, body limits, timeouts,
errors before and during a stream, HEAD, the built-ins beside an app mounted at ``/``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases import ASGI_CASES
from tests.servers import ROOT, Server, valor_server
from valor.asgi_http import BODY_FOLLOWS
from valor.server import create_app

PROBE = """
import asyncio, json, time
from http import HTTPStatus
from urllib.parse import unquote

OPEN = {"streams": 0, "closed": 0}


async def app(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("no lifespan")
    what = scope["path"][len(scope["root_path"]):].strip("/").split("/")[0]
    pairs = [p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p]
    query = {name: unquote(value) for name, value in pairs}
    if what == "echo":
        first = await receive()
        shown = {k: v for k, v in scope.items() if k not in ("state",)}
        shown["headers"] = [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]
        shown["raw_path"] = scope["raw_path"].decode("latin-1")
        shown["query_string"] = scope["query_string"].decode("latin-1")
        shown["body"] = first["body"].decode("latin-1")
        shown["more_body"] = first["more_body"]
        body = json.dumps(shown).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    elif what == "headers":
        await send({"type": "http.response.start", "status": 201, "headers": [
            (b"X-Upper", b"Value"), (b"x-trim", b"  spaced \\t"), (b"content-length", b"999"),
            (b"x-valor-plugin", b"fake"), (b"X-Correlation-Id", b"fake"),
            (b"connection", b"keep-alive"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2"),
            (b"x-empty", b""), (b"Transfer-Encoding", b"gzip")]})
        await send({"type": "http.response.body", "body": b"hi", "more_body": False})
    elif what == "plain-headers":  # names in lower case, nothing to trim: passed on as sent
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/plain"), (b"content-length", b"999"),
            (b"x-valor-plugin", b"fake"), (b"x-correlation-id", b"fake"),
            (b"keep-alive", b"timeout=5"), (b"set-cookie", b"a=1"), (b"x-empty", b"")]})
        await send({"type": "http.response.body", "body": b"plain"})
    elif what == "status":
        code = int(query.get("code", "200"))
        status = HTTPStatus(code) if query.get("enum") else code
        headers = [(query.get("name", "x-name").encode(), query.get("value", "v").encode())]
        more = query.get("stream") == "1"
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": query.get("body", "").encode(),
                    "more_body": more})
        if more:
            await send({"type": "http.response.body", "body": b"rest"})
    elif what == "str-headers":
        await send({"type": "http.response.start", "status": 200, "headers": [("a", "b")]})
        await send({"type": "http.response.body", "body": b"x"})
    elif what == "raise":
        raise ValueError("boom")
    elif what == "raise-after-start":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ValueError("boom")
    elif what == "timeout-error":
        raise TimeoutError("upstream")
    elif what == "silent":
        return
    elif what == "start-only":
        await send({"type": "http.response.start", "status": 200, "headers": []})
    elif what == "twice":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})
    elif what == "hang":
        await asyncio.sleep(60)
    elif what == "late":
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"too late"})
    elif what == "hold-loop":
        time.sleep(1.5)  # holds the event loop: the watchdog's case
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"too late"})
    elif what == "stream":
        count = int(query.get("n", "3"))
        fail = int(query.get("fail", "-1"))
        idle = int(query.get("idle", "-1"))
        OPEN["streams"] += 1
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            number = 0
            while count == 0 or number < count:
                if number == fail:
                    raise ValueError("failed as asked")
                if number == idle:
                    await asyncio.sleep(60)
                await send({"type": "http.response.body", "body": b"%d\\n" % number,
                            "more_body": True})
                number += 1
                if count == 0:
                    await asyncio.sleep(0.02)
            await send({"type": "http.response.body", "body": b"end\\n"})
        finally:
            OPEN["streams"] -= 1
            OPEN["closed"] += 1
    elif what == "streams":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(OPEN).encode()})
    elif what == "after":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"answered"})
        raise ValueError("after the answer")
    else:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"no such probe"})
"""

ROOT_APP = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("no lifespan")
    body = ("root app at " + scope["path"]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
"""

MAX_BODY = 1000


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """The same manifest twice: passed through, and through the wire message."""
    folder = tmp_path_factory.mktemp("passthrough")
    for example in ("board.py", "shop.py"):
        shutil.copy(ROOT / "plugins" / example, folder / example)
    shutil.copytree(ROOT / "plugins" / "readinglist", folder / "readinglist")
    (folder / "probe.py").write_text(PROBE)
    (folder / "root.py").write_text(ROOT_APP)
    plugins = [
        {"name": "board", "type": "asgi", "path": "board.py"},
        {"name": "shop", "type": "asgi", "path": "shop.py"},
        {"name": "readinglist", "type": "asgi", "app": "readinglist.main:app"},
        {"name": "probe", "type": "asgi", "path": "probe.py", "timeout": 0.5},
        {"name": "root", "type": "asgi", "path": "root.py", "prefix": "/"},
    ]
    manifest = folder / "plugins.json"
    manifest.write_text(json.dumps({"plugins": plugins}))
    options = ("--max-body-size", str(MAX_BODY), "--timeout-body", "1")
    with (
        valor_server(manifest, *options, log_dir=folder) as direct,
        valor_server(manifest, *options, log_dir=folder, env={"VALOR_PASSTHROUGH": "0"}) as wire,
    ):
        yield direct, wire


# uvicorn's date; an id the runtime makes up (no x-request-id sent); an error id.
_MASKS = [
    (re.compile(rb"(?im)^date: [^\r\n]*"), b"date: <date>"),
    (re.compile(rb"\b[0-9a-f]{32}\b"), b"<generated id>"),
    (re.compile(rb'"error_id": "[0-9a-f]{12}"'), b'"error_id": "<id>"'),
    (re.compile(rb'"client": \["127\.0\.0\.1", [0-9]+\]'), b'"client": ["127.0.0.1", "<port>"]'),
]


def exchange(server: Server, request: bytes) -> bytes:
    """The answer to ``request`` (``{host}`` filled in) as sent, byte for byte, masked;
    ``b"<broken>"`` ends an answer the server broke off."""
    host = server.url.removeprefix("http://")
    raw = request.replace(b"{host}", host.encode())
    with socket.create_connection(tuple(host.split(":")), timeout=10) as connection:  # type: ignore[arg-type]
        connection.sendall(raw)
        received = b""
        while True:
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                break
            received += chunk
    if b"\r\n\r\n" in received:
        head, _, body = received.partition(b"\r\n\r\n")
        if b"transfer-encoding: chunked" in head.lower() and not body.endswith(b"0\r\n\r\n"):
            received += b"<broken>"
    for pattern, mask in _MASKS:
        received = pattern.sub(mask, received)
    port = host.rpartition(":")[2]
    return received.replace(host.encode(), b"HOST").replace(port.encode(), b"0")  # still JSON


def request(
    method: str,
    path: str,
    headers: list[tuple[str, str]] = (),
    body: bytes | None = None,
    close: bool = True,
) -> bytes:
    """A request that asks the server to close the connection after it; without ``close``,
    the server must close it itself (after an answer to a body it did not read)."""
    lines = [f"{method} {path} HTTP/1.1", "host: {host}"]
    if close:
        lines.append("connection: close")
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


ECHO_HEADERS = [
    ("X-Dup", "1"),
    ("x-request-id", "probe-1"),
    ("Cookie", "a=1"),
    ("X-Forwarded-Prefix", "/evil"),
    ("x-dup", " 2 "),
    ("cookie", "b=2"),
    ("Accept", "*/*"),
]

CASES: dict[str, bytes] = {
    **{
        f"table:{case.id}": request(
            case.method, case.path, [*case.headers.items(), ("x-request-id", case.id)], case.body
        )
        for case in ASGI_CASES
    },
    "echo": request("GET", "/probe/echo/a%20b%2Fc/?x=1&y=%20&z", ECHO_HEADERS),
    "echo-generated-id": request("GET", "/probe/echo"),
    "echo-forwarded-prefix": request("GET", "/probe/echo", [("x-forwarded-prefix", "/evil")]),
    "echo-empty-request-id": request("GET", "/probe/echo", [("x-request-id", "")]),
    "echo-head-plain": request("HEAD", "/probe/echo", [("x-request-id", "plain")]),
    "echo-post": request("POST", "/probe/echo", [("content-type", "text/plain")], b"hi there"),
    "echo-empty-body": request("POST", "/probe/echo", [], b""),
    "echo-head": request("HEAD", "/probe/echo", ECHO_HEADERS),
    "echo-lowercase-head": request("head", "/probe/echo"),
    "echo-patch": request("PATCH", "/probe/echo", [], b"{}"),
    "echo-http-1.0": request("GET", "/probe/echo").replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "echo-encoded-prefix": request("GET", "/%70robe/echo"),
    "echo-hash-in-query": request("GET", "/probe/echo?x=1#y"),
    "echo-no-host": b"GET /probe/echo HTTP/1.0\r\n\r\n",
    "answer-headers": request("GET", "/probe/headers"),
    "answer-headers-head": request("HEAD", "/probe/headers"),
    "plain-headers": request("GET", "/probe/plain-headers"),
    "plain-headers-again": request("GET", "/probe/plain-headers"),  # its headers known now
    "plain-headers-head": request("HEAD", "/probe/plain-headers"),
    "status-enum": request("GET", "/probe/status?code=201&enum=1&body=made"),
    "status-enum-stream": request("GET", "/probe/status?code=200&enum=1&stream=1&body=a"),
    "status-204": request("GET", "/probe/status?code=204"),
    "status-204-body": request("GET", "/probe/status?code=204&body=x"),
    "status-304-stream": request("GET", "/probe/status?code=304&stream=1"),
    "status-101": request("GET", "/probe/status?code=101"),
    "status-199-stream": request("GET", "/probe/status?code=199&stream=1"),
    "status-999": request("GET", "/probe/status?code=999"),
    "bad-header-name": request("GET", "/probe/status?name=a%20b"),
    "bad-header-name-stream": request("GET", "/probe/status?name=a:b&stream=1"),
    "bad-header-value": request("GET", "/probe/status?value=%01"),
    "str-headers": request("GET", "/probe/str-headers"),
    "raise": request("GET", "/probe/raise"),
    "raise-head": request("HEAD", "/probe/raise"),
    "raise-after-start": request("GET", "/probe/raise-after-start"),
    "timeout-error": request("GET", "/probe/timeout-error"),
    "silent": request("GET", "/probe/silent"),
    "start-only": request("GET", "/probe/start-only"),
    "twice": request("GET", "/probe/twice"),
    "hang": request("GET", "/probe/hang"),
    "late": request("GET", "/probe/late"),
    "stream": request("GET", "/probe/stream?n=3"),
    "stream-head": request("HEAD", "/probe/stream?n=3"),
    "stream-fails": request("GET", "/probe/stream?n=5&fail=2"),
    "stream-idle": request("GET", "/probe/stream?n=5&idle=2"),
    "after-answer": request("GET", "/probe/after"),
    "body-too-large": request("POST", "/probe/echo", [], b"x" * (MAX_BODY + 1)),
    "body-too-large-chunked": request(
        "POST", "/probe/echo", [("transfer-encoding", "chunked")], close=False
    )
    + b"%x\r\n%s\r\n0\r\n\r\n" % (MAX_BODY + 1, b"x" * (MAX_BODY + 1)),
    "body-too-slow": request("POST", "/probe/echo", [("content-length", "10")], close=False)
    + b"12345",
    "bad-host": request("GET", "/probe/echo").replace(b"host: {host}", b"host: a b"),
    "root-app": request("GET", "/elsewhere/x?y=1"),
    "health": request("GET", "/_health"),
    "registry": request("GET", "/_plugins"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_pass_through_answers_as_the_message_path(
    servers: tuple[Server, Server], case: str
) -> None:
    direct, wire = servers
    passed, messaged = exchange(direct, CASES[case]), exchange(wire, CASES[case])
    assert passed == messaged, f"{case}:\n{passed!r:.3000}\n{messaged!r:.3000}"
    assert passed.startswith(b"HTTP/1.1 "), passed


def access_lines(server: Server) -> list[str]:
    """The server's access-log lines so far, without their times and made-up ids."""
    lines = re.findall(r"INFO valor\.access: (.*)", server.log())
    return [re.sub(r" [0-9.]+ms [0-9a-f]{32}$| [0-9.]+ms", " <time>", line) for line in lines]


def test_both_write_the_same_access_lines(servers: tuple[Server, Server]) -> None:
    # Run right after the comparison: both servers have had the same requests, in order.
    direct, wire = servers
    assert access_lines(direct) == access_lines(wire)
    assert "probe 200 GET /probe/echo/a%20b%2Fc/ <time> probe-1" in access_lines(direct)


def test_the_cases_reach_what_they_name(servers: tuple[Server, Server]) -> None:
    """The comparison above is worth something only if the answers are the ones meant."""
    direct, _ = servers
    shown = exchange(direct, CASES["echo"]).partition(b"\r\n\r\n")[2]
    scope = json.loads(shown)
    assert scope["root_path"] == "/probe" and scope["path"] == "/probe/echo/a b/c/", scope
    assert scope["raw_path"] == "/probe/echo/a%20b%2Fc/" and scope["query_string"] == "x=1&y=%20&z"
    # The client's headers, as sent: sorted by name, repeated ones apart, nothing added.
    assert scope["headers"] == [
        ["accept", "*/*"],
        ["connection", "close"],
        ["cookie", "a=1"],
        ["cookie", "b=2"],
        ["host", "HOST"],
        ["x-dup", "1"],
        ["x-dup", "2"],
        ["x-forwarded-prefix", "/evil"],
        ["x-request-id", "probe-1"],
    ], scope["headers"]
    assert scope["extensions"] == {"valor": {"request_id": "probe-1"}}, scope
    assert scope["client"] == ["127.0.0.1", "<port>"] and scope["http_version"] == "1.1", scope
    generated = json.loads(exchange(direct, CASES["echo-generated-id"]).partition(b"\r\n\r\n")[2])
    assert generated["extensions"]["valor"]["request_id"] == "<generated id>", generated
    assert "x-request-id" not in dict(generated["headers"]), generated
    head = exchange(direct, CASES["answer-headers"]).partition(b"\r\n\r\n")[0].split(b"\r\n")
    # uvicorn's own line, as the request asked: h11's protocol writes `Connection`, httptools'
    # `connection`.
    head[-1] = head[-1].replace(b"connection: ", b"Connection: ")
    assert head[1:] == [
        b"date: <date>",
        b"server: uvicorn",
        b"x-upper: Value",
        b"x-trim: spaced",
        b"set-cookie: a=1",
        b"set-cookie: b=2",
        b"x-empty: ",
        b"x-correlation-id: <generated id>",
        b"x-valor-plugin: probe",
        b"x-valor-host: server",
        b"content-length: 2",
        b"Connection: close",  # uvicorn's, as the request asked
    ], head
    for case in ("plain-headers", "plain-headers-again"):
        head = exchange(direct, CASES[case]).partition(b"\r\n\r\n")[0].split(b"\r\n")
        head[-1] = head[-1].replace(b"Connection: ", b"connection: ")
        assert head[1:] == [
            b"date: <date>",
            b"server: uvicorn",
            b"content-type: text/plain",
            b"set-cookie: a=1",
            b"x-empty: ",
            b"x-correlation-id: <generated id>",
            b"x-valor-plugin: probe",
            b"x-valor-host: server",
            b"content-length: 5",
            b"connection: close",
        ], head
    for case, status in [
        ("raise", b"500"),
        ("hang", b"504"),
        ("late", b"504"),
        ("timeout-error", b"504"),
        ("bad-header-name", b"500"),
        ("status-204-body", b"500"),
        ("body-too-large", b"413"),
        ("body-too-large-chunked", b"413"),
        ("body-too-slow", b"408"),
        ("bad-host", b"400"),
    ]:
        answer = exchange(direct, CASES[case])
        assert answer.startswith(b"HTTP/1.1 " + status), (case, answer[:300])
    assert exchange(direct, CASES["stream-fails"]).endswith(b"<broken>")
    assert b'"plugins": 5' in exchange(direct, CASES["health"])
    assert b"root app at /elsewhere/x" in exchange(direct, CASES["root-app"])
    log = direct.log()
    assert "plug-in 'probe' failed in the middle of its stream [error_id=" in log
    assert "plug-in 'probe' sent no part of its stream for 0.5 seconds [error_id=" in log
    assert "plug-in 'probe' failed after its answer: ValueError: after the answer" in log
    assert re.search(r"failed after its answer: .* \[error_id=[0-9a-f]{12}\]\nTraceback", log)


def test_a_client_that_goes_away_stops_the_app(servers: tuple[Server, Server]) -> None:
    for server in servers[:1]:  # the message path's own test: tests/test_server_streaming.py
        before = httpx.get(server.url + "/probe/streams").json()
        with httpx.stream("GET", server.url + "/probe/stream?n=0") as answer:
            lines = answer.iter_lines()
            assert next(lines) == "0"
            assert httpx.get(server.url + "/probe/streams").json()["streams"] == 1
        deadline = time.monotonic() + 10
        expected = {"streams": 0, "closed": before["closed"] + 1}
        while (now := httpx.get(server.url + "/probe/streams").json()) != expected:
            assert time.monotonic() < deadline, (server.url, now)
            time.sleep(0.05)


def test_the_watchdog_stops_an_app_that_holds_the_loop(servers: tuple[Server, Server]) -> None:
    # An async app that blocks (time.sleep) past its timeout is interrupted by the runtime's
    # watchdog, as a python plug-in is: the app runs in the task the deadline watches. (The
    # message path runs an app in a task of its own, which the watchdog does not interrupt:
    # its late answer gets through there.)
    direct, _ = servers
    answer = exchange(direct, request("GET", "/probe/hold-loop"))
    assert answer.startswith(b"HTTP/1.1 504 "), answer[:300]
    assert b"did not answer within 0.5 seconds" in answer


def _probe_manifest(folder: Path, source: str) -> Path:
    """A manifest of one asgi plug-in, ``probe``, whose module is ``source``."""
    (folder / "probe.py").write_text(source)
    manifest = folder / "plugins.json"
    manifest.write_text(
        json.dumps({"plugins": [{"name": "probe", "type": "asgi", "path": "probe.py"}]})
    )
    return manifest


async def _both_paths(folder: Path, source: str) -> list[Any]:
    """The probe's app started twice: passed through, and through the wire message."""
    manifest = _probe_manifest(folder, source)
    apps = [create_app(manifest, store="memory:", passthrough=on) for on in (True, False)]
    for app in apps:
        await app.startup()
    return apps


async def _in_process(
    app: Any, headers: list[tuple[bytes, bytes]], query: bytes, without: str = ""
) -> list[Any]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/probe/echo",
        "raw_path": b"/probe/echo",
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    scope.pop(without, None)
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: dict[str, Any]) -> None:
        # The message path marks a head whose body follows at once, for the server's
        # protocols to write both together: a hint to the transport, no part of the answer.
        sent.append({key: value for key, value in event.items() if key != BODY_FOLLOWS})

    await app(scope, receive, send)
    return sent


@pytest.mark.anyio
async def test_names_learned_for_the_usual_request_change_no_answer(tmp_path: Path) -> None:
    """In-process, where names may come in any case: the pass-through remembers the header
    names of the usual request (lower case, each once, no body announced), and a request
    with names in upper case, repeated, or announcing a body, before or after, answers as the
    message path does; so does a ``#`` in the query string."""
    apps = await _both_paths(tmp_path, PROBE)
    host = (b"host", b"example.com")
    cases = [
        ([host, (b"x-request-id", b"a")], b""),
        ([host, (b"x-request-id", b"b"), (b"x-name", b"1")], b"y=1"),
        ([host, (b"x-request-id", b"c")], b"y=1#z"),
        ([(b"Host", b"example.com"), (b"x-request-id", b"d")], b""),
        ([host, (b"x-request-id", b"e"), (b"X-Name", b"2")], b""),
        ([host, (b"x-request-id", b"f"), (b"x-name", b"1"), (b"x-name", b"2")], b""),
        ([host, (b"x-request-id", b"g"), (b"content-length", b"0")], b""),
        ([host, (b"x-request-id", b"h"), (b"x-name", b"3")], b""),
    ]
    try:
        for headers, query in cases:
            direct, wire = [await _in_process(app, list(headers), query) for app in apps]
            assert direct == wire, (headers, query)
            assert direct[0]["status"] == 200, direct
    finally:
        for app in apps:
            await app.runtime.close()
    assert apps[0]._passthrough._plain_names == {b"host", b"x-request-id", b"x-name"}


@pytest.mark.anyio
async def test_a_scope_without_an_optional_key_is_answered_as_the_message_path_does(
    tmp_path: Path,
) -> None:
    """ASGI lets a server leave out several of the scope's keys: the pass-through reads
    uvicorn's scope by subscripts, and any other by their defaults."""
    apps = await _both_paths(tmp_path, PROBE)
    headers = [(b"host", b"example.com"), (b"x-request-id", b"a")]
    keys = ["", "raw_path", "root_path", "query_string", "scheme", "client", "http_version"]
    try:
        for key in keys:
            direct, wire = [await _in_process(app, list(headers), b"y=1", key) for app in apps]
            assert direct == wire, key
            assert direct[0]["status"] == 200, direct
    finally:
        for app in apps:
            await app.runtime.close()


@pytest.mark.anyio
async def test_access_lines_follow_the_loggers_level_and_disabled_flag(tmp_path: Path) -> None:
    """The usual answer asks the access logger's own cache whether it writes (logging's
    call when the cache, cleared by each level set, has no answer): a level set later, or
    the logger disabled (as logging's dictConfig does), is followed at once."""
    import logging

    from valor.access import access_log

    manifest = _probe_manifest(tmp_path, PROBE)
    app = create_app(manifest, store="memory:")
    await app.startup()
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Lines()
    level, disabled = access_log.level, access_log.disabled
    access_log.addHandler(handler)
    headers = [(b"host", b"example.com"), (b"x-request-id", b"a")]
    try:
        for new_level, off, written in [
            (logging.INFO, False, 1),
            (logging.INFO, False, 1),  # cached
            (logging.WARNING, False, 0),
            (logging.INFO, False, 1),
            (logging.INFO, True, 0),
            (logging.INFO, False, 1),
        ]:
            if access_log.level != new_level:
                access_log.setLevel(new_level)  # clears the cache
            access_log.disabled = off  # does not
            lines.clear()
            answer = await _in_process(app, list(headers), b"")
            assert answer[0]["status"] == 200
            assert len(lines) == written, (new_level, off)
    finally:
        access_log.removeHandler(handler)
        access_log.setLevel(level)
        access_log.disabled = disabled
        await app.runtime.close()


CALLING_PROBE = """
import json
from valor.outbound import calling


async def app(scope, receive, send):
    current = calling()
    shown = {
        "spec": current.spec.name,
        "runtime": type(current.runtime).__name__,
        "correlation_id": current.correlation_id,
        "origin": current.origin,
        "caller": current.caller,
        "chain": current.chain(),
    }
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps(shown).encode()})
"""


@pytest.mark.anyio
async def test_the_app_sees_the_same_calling_on_both_paths(tmp_path: Path) -> None:
    """The pass-through's call stands for ``outbound.Calling`` while the app runs (no tuple is
    made per request): its fields and chain are the message path's, and it is gone after."""
    from valor.outbound import calling

    apps = await _both_paths(tmp_path, CALLING_PROBE)
    headers = [(b"host", b"example.com"), (b"x-request-id", b"abc")]
    try:
        direct, wire = [await _in_process(app, list(headers), b"") for app in apps]
    finally:
        for app in apps:
            await app.runtime.close()
    assert direct == wire
    assert json.loads(direct[1]["body"]) == {
        "spec": "probe",
        "runtime": "Runtime",
        "correlation_id": "abc",
        "origin": "http://example.com",
        "caller": None,
        "chain": ["probe"],
    }
    assert calling() is None
