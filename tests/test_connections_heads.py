"""The answer heads of ``valor.connections``' protocols: fields seen valid before skip their
checks, and any other head goes the way uvicorn's own protocols take it, errors included."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from valor import connections
from valor.asgi_http import BODY_FOLLOWS, WHOLE_ANSWERS
from valor.connections import GuardedH11Protocol, GuardedHttpToolsProtocol
from valor.processes import free_port

HEADS: dict[str, list[Any]] = {
    "/ok": [(b"content-type", b"text/plain"), (b"x-id", b"a b\tc")],
    "/empty-value": [(b"x-empty", b"")],
    "/close": [(b"connection", b"close")],
    "/no-length": [],  # chunked
    "/crlf-value": [(b"x-id", b"1\r\nx-injected: 1")],
    "/nul-value": [(b"x-id", b"a\x00b")],
    "/space-value": [(b"x-id", b" padded ")],  # h11 refuses it, uvicorn's httptools not
    "/bad-name": [(b"x id", b"1")],
    "/empty-name": [(b"", b"1")],
    "/str-pair": [("x-id", "1")],
    "/id-value": [(b"x-id", b"0f3aC9")],  # letters and digits: passed, not remembered
    "/str-value": [(b"x-id", "0f3aC9")],
    "/not-pairs": [(b"x-id",)],
    "/float-status": [],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    headers = list(HEADS[path])
    body = b"hello"
    if path != "/no-length":
        headers.append((b"content-length", b"5"))
    status: Any = 200.0 if path == "/float-status" else 200
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(
    scope="module",
    params=[
        (H11Protocol, GuardedH11Protocol),
        (HttpToolsProtocol, GuardedHttpToolsProtocol),
    ],
    ids=["h11", "httptools"],
)
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """uvicorn's own protocol and Valor's, each serving ``app``."""
    urls, stops = [], []
    for protocol in request.param:
        port = free_port()
        config = uvicorn.Config(
            app,
            port=port,
            http=protocol,
            log_level="critical",
            access_log=False,  # as valor serve runs: uvicorn's access log takes the slow way
            lifespan="off",
            loop="asyncio",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
        thread.start()
        urls.append(f"http://127.0.0.1:{port}")
        stops.append((server, thread))
    with httpx.Client(timeout=10) as client:
        for url in urls:  # until each answers
            for _ in range(200):
                try:
                    client.get(url + "/ok")
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.05)
    yield urls[0], urls[1]
    for server, thread in stops:
        server.should_exit = True
        thread.join(timeout=10)


def outcome(client: httpx.Client, url: str) -> Any:
    """What a client gets: the status, headers and body, or the error's kind."""
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    headers = [(k, v) for k, v in response.headers.items() if k not in ("date", "server")]
    return response.status_code, headers, response.content


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", list(HEADS))
def test_each_head_is_answered_as_uvicorns_protocol_answers_it(
    servers: tuple[str, str], path: str
) -> None:
    uvicorns, valors = servers
    # Each twice, on a new connection, and after a valid answer: fields seen before skip
    # their checks, the invalid ones are never among them.
    for _ in range(2):
        with httpx.Client(timeout=10) as client:
            expected = outcome(client, uvicorns + path)
        with httpx.Client(timeout=10) as client:
            assert outcome(client, valors + "/ok")[0] == 200
            assert outcome(client, valors + path) == expected
    if path in ("/crlf-value", "/nul-value", "/bad-name", "/not-pairs"):
        assert isinstance(expected, str)  # refused, not answered: the test can fail
    if path == "/id-value":  # checked each time, not kept among the values seen valid
        assert expected[0] == 200
        assert b"0f3aC9" not in connections._h11_values.seen
        assert b"0f3aC9" not in getattr(connections, "_values", connections._h11_values).seen


# -- a head whose body follows at once (BODY_FOLLOWS) goes out with it, in one write ---------


class Transport(asyncio.Transport):
    """What a protocol writes, write by write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def answer_app(marked: bool, body: bytes, fields: list[Any], more: bool) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        start = {"type": "http.response.start", "status": 200, "headers": fields}
        if marked:
            start[BODY_FOLLOWS] = True
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": more})
        if more:
            await send({"type": "http.response.body", "body": b"!"})

    return app


async def exchange(
    protocol: type, app: Any, request: bytes, defaults: list[Any] | None = None
) -> tuple[bytes, int, bool]:
    """What a protocol writes for two requests on one connection (the second if it stays
    open): the bytes, in how many writes, and whether it closed the connection. ``defaults``:
    the server's default fields (``server: uvicorn`` unless given)."""
    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
    config.load()
    state = ServerState()
    state.default_headers = defaults or [(b"server", b"uvicorn")]
    connection = protocol(config, state, {}, asyncio.get_running_loop())
    transport = Transport()
    connection.connection_made(transport)
    for _ in range(2):
        if transport.closed:
            break
        connection.data_received(request)
        for _ in range(20):
            await asyncio.sleep(0)
    closed = transport.closed
    connection.connection_lost(None)
    return b"".join(transport.writes), len(transport.writes), closed


# uvicorn's protocol and Valor's guarded one beside it, for each stack.
BOTH_PROTOCOLS = pytest.mark.parametrize(
    "protocols",
    [(H11Protocol, GuardedH11Protocol), (HttpToolsProtocol, GuardedHttpToolsProtocol)],
    ids=["h11", "httptools"],
)
TYPE = (b"content-type", b"text/plain")
LENGTH = (b"content-length", b"5")
GET = b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n"


@pytest.mark.anyio
@pytest.mark.timeout(30)
@BOTH_PROTOCOLS
@pytest.mark.parametrize(
    ("request_head", "body", "fields", "more"),
    [
        (GET, b"hello", [TYPE, LENGTH], False),
        (GET.replace(b"GET", b"HEAD"), b"", [TYPE, LENGTH], False),
        (GET, b"hell", [TYPE, LENGTH], True),  # more parts: the head goes first, alone
        (GET, b"hell", [TYPE, LENGTH], False),  # shorter than its length: uvicorn's error
        (GET, b"hello!", [TYPE, LENGTH], False),  # longer
        (GET, b"hello", [(b"Content-Type", b"text/plain"), LENGTH], False),
        (GET, b"hello", [TYPE, (b"content-length", b"05")], False),
        (GET, b"hello", [(b"host", b"example.com"), TYPE, LENGTH], False),  # h11 moves it
        (GET, b"hello", [TYPE, LENGTH, (b"connection", b"keep-alive")], False),
        (GET, b"hello", [TYPE], False),  # no length: chunked
        (
            GET.replace(b"\r\n\r\n", b"\r\nconnection: Close\r\n\r\n"),
            b"hello",
            [TYPE, LENGTH],
            False,
        ),
        (GET.replace(b"HTTP/1.1", b"HTTP/1.0"), b"hello", [TYPE, LENGTH], False),
    ],
)
async def test_a_head_whose_body_follows_is_written_with_it(
    protocols: tuple[type, type], request_head: bytes, body: bytes, fields: list[Any], more: bool
) -> None:
    uvicorns, valors = protocols
    expected = await exchange(uvicorns, answer_app(False, body, fields, more), request_head)
    for marked in (False, True):
        got = await exchange(valors, answer_app(marked, body, fields, more), request_head)
        assert (got[0], got[2]) == (expected[0], expected[2])
    if marked and body == b"hello" and LENGTH in fields:  # each answer in one write
        assert got[1] == (1 if got[2] else 2)


# -- the keep-alive time limit: one timer per connection, moved lazily -----------------------


class Timer:
    def __init__(self, when: float, callback: Any, args: tuple[Any, ...]) -> None:
        self.when, self.callback, self.args = when, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """The running loop, but for its clock and timers, which the test moves on."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.now = 0.0
        self.timers: list[Timer] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loop, name)

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any) -> Timer:
        timer = Timer(when, callback, args)
        self.timers.append(timer)
        return timer

    def call_later(self, delay: float, callback: Any, *args: Any) -> Timer:
        return self.call_at(self.now + delay, callback, *args)

    def advance(self, to: float) -> None:
        self.now = to
        while due := [t for t in self.timers if t.when <= to and not t.cancelled]:
            timer = min(due, key=lambda t: t.when)
            self.timers.remove(timer)
            timer.callback(*timer.args)


async def keep_alive_timeline(protocol: type) -> list[tuple[float, int, bool]]:
    """A connection answered at 0, again at 3, a slow request from 6 to 9, then idle: at
    each moment, the answers written so far and whether the connection is closed."""
    release = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [LENGTH]})
        await send({"type": "http.response.body", "body": b"hello"})

    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
    config.load()
    assert config.timeout_keep_alive == 5
    clock = Clock(asyncio.get_running_loop())
    connection = protocol(config, ServerState(), {}, clock)
    transport = Transport()
    connection.connection_made(transport)

    async def settle() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    seen = []
    steps: list[tuple[float, bytes | None]] = [
        (0, GET), (3, GET), (5.5, None), (6, GET.replace(b"/", b"/slow", 1)), (9, None),
        (9, b""), (13.9, None), (14, None),
    ]  # fmt: skip
    for moment, data in steps:
        clock.advance(moment)
        if data == b"":
            release.set()
        elif data:
            connection.data_received(data)
        await settle()
        answers = b"".join(transport.writes).count(b"HTTP/1.1 200 OK")
        seen.append((moment, answers, transport.closed))
    connection.connection_lost(None)
    return seen


@pytest.mark.anyio
@pytest.mark.timeout(30)
@BOTH_PROTOCOLS
async def test_an_idle_connection_closes_when_uvicorns_keep_alive_limit_says(
    protocols: tuple[type, type],
) -> None:
    """Valor's protocols move one timer lazily where uvicorn's set one per answer: a
    connection closes at the same moments (5 s after its latest answer with nothing since),
    never while a request is under way nor early after a later answer."""
    uvicorns, valors = protocols
    expected = await keep_alive_timeline(uvicorns)
    assert expected[-2:] == [(13.9, 3, False), (14, 3, True)]
    assert all(not closed for _, _, closed in expected[:-1])
    assert await keep_alive_timeline(valors) == expected


# -- the server's set of request tasks, without a done callback per request -------------------


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_each_request_task_stays_in_the_servers_set_until_it_ends() -> None:
    """uvicorn's shutdown waits on its set of request tasks; the httptools protocol drops a
    task from it at the connection's next request or end, if done by then, else when done."""
    state = ServerState()
    running: list[bool] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [LENGTH]})
        await send({"type": "http.response.body", "body": b"hello"})
        # Answered: a pipelined request after it has started, this task runs on.
        running.append(asyncio.current_task() in state.tasks)

    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off")
    config.load()
    connection = GuardedHttpToolsProtocol(config, state, {}, asyncio.get_running_loop())
    transport = Transport()
    connection.connection_made(transport)
    for request in (GET * 2, GET):  # two pipelined, then one more
        connection.data_received(request)
        for _ in range(20):
            await asyncio.sleep(0)
    assert b"".join(transport.writes).count(b"HTTP/1.1 200 OK") == 3
    assert running == [True, True, True]
    assert len(state.tasks) == 1 and all(task.done() for task in state.tasks)  # the latest
    connection.connection_lost(None)
    assert not state.tasks


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "request_head",
    [
        b"NOT HTTP AT ALL\r\n\r\n",  # the parser's error: uvicorn's 400
        GET.replace(b"\r\n\r\n", b"\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"),
        GET.replace(b"\r\n\r\n", b"\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"),
    ],
    ids=["invalid", "websocket", "h2c"],
)
async def test_a_parsers_error_or_upgrade_is_handled_as_uvicorn_handles_it(
    request_head: bytes,
) -> None:
    app = answer_app(False, b"hello", [TYPE, LENGTH], False)
    expected = await exchange(HttpToolsProtocol, app, request_head)
    assert await exchange(GuardedHttpToolsProtocol, app, request_head) == expected


# -- a whole answer handed over at once (send_whole), without its ASGI events ----------------


def whole_app(status: int, fields: list[Any], body: bytes, taken: list[bool]) -> Any:
    """Answers through the cycle's ``send_whole`` where the server has it, noting whether it
    took the answer, and through the events where it did not."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        cycle = getattr(send, "__self__", None)
        if type(cycle) in WHOLE_ANSWERS:
            # The last field written out as a line, in parts.
            lines = (b"x-valor-plugin: ", b"shop", b"\r\n")
            took = cycle.send_whole(status, list(fields), lines, body)
            taken.append(took)
            if took:
                return
        headers = [*fields, (b"x-valor-plugin", b"shop")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.mark.anyio
@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("request_head", "status", "fields", "body"),
    [
        (GET, 200, [TYPE, (b"x-id", b"a b\tc"), LENGTH], b"hello"),
        (GET.replace(b"GET", b"HEAD"), 200, [TYPE, LENGTH], b"hello"),
        (GET, 204, [TYPE], b""),
        (GET, 304, [], b""),
        (GET, 418, [LENGTH], b"hello"),
        (GET.replace(b"\r\n\r\n", b"\r\nconnection: Close\r\n\r\n"), 200, [LENGTH], b"hello"),
        (GET.replace(b"HTTP/1.1", b"HTTP/1.0"), 200, [LENGTH], b"hello"),
        (GET.replace(b"\r\n\r\n", b"\r\nexpect: 100-continue\r\n\r\n"), 200, [LENGTH], b"hello"),
    ],
)
async def test_a_whole_answer_is_written_as_uvicorns_protocol_writes_its_events(
    request_head: bytes, status: int, fields: list[Any], body: bytes
) -> None:
    taken: list[bool] = []
    expected = await exchange(
        HttpToolsProtocol, whole_app(status, fields, body, taken), request_head
    )
    assert taken == []  # uvicorn's own protocol has no send_whole
    got = await exchange(
        GuardedHttpToolsProtocol, whole_app(status, fields, body, taken), request_head
    )
    assert got == (expected[0], 1 if expected[2] else 2, expected[2])  # one write per answer
    assert taken and all(taken)


@pytest.mark.anyio
@pytest.mark.timeout(30)
async def test_a_whole_answer_is_refused_where_uvicorns_steps_are_needed() -> None:
    # Default fields that are framing (a --header of the server's) or invalid: uvicorn's own
    # send handles them, its errors included.
    for defaults in ([(b"connection", b"close")], [(b"x-bad", b"a\r\nb")]):
        taken: list[bool] = []
        app = whole_app(200, [LENGTH], b"hello", taken)
        expected = await exchange(HttpToolsProtocol, app, GET, defaults)
        assert taken == []
        got = await exchange(GuardedHttpToolsProtocol, app, GET, defaults)
        assert taken and not any(taken)
        assert got == expected
