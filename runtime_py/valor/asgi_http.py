"""The ASGI side of an HTTP exchange: what the server host (``valor.server``, and its short way
to ``asgi`` plug-ins, ``valor.passthrough``) reads from a scope and sends back, and the scopes
the ``asgi`` kind builds for an app, in both hosts. Standard library only."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote, unquote

from .errors import BodyError
from .streaming import Stream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Which host answered: the one header in which the two hosts' answers differ, by design.
HOST_HEADER = (b"x-valor-host", b"server")
BODY_FOLLOWS = "valor.body_follows"
"""A key of an ``http.response.start`` event: its whole body is the next event, sent at once.
A server may then hold the head and write it with the body, one write (one system call, one
packet) instead of two, as ``valor.connections``' protocols do; any other server ignores it."""

WHOLE_ANSWERS: set[type] = set()
"""Server classes whose ``send`` (a bound method) belongs to an object with ``send_whole(status,
fields, lines, body) -> bool``: a whole answer in one call, no ASGI events made
(``valor.connections``' httptools cycle). The pass-through hands its usual answer that way when
the server's is one."""


def _done() -> asyncio.Future[None]:
    # The host's own kind of loop: Pyodide's (a WebLoop) has no sockets for a selector's.
    future: asyncio.Future[None] = asyncio.Future(loop=(loop := asyncio.new_event_loop()))
    future.set_result(None)
    loop.close()  # never used: awaiting a done future neither yields nor schedules
    return future


SENT = _done()
"""What a ``send`` hands back once it has sent its event itself (no coroutine to run): one
future, done, for every such send. Awaiting it costs a third of a new coroutine's call and
await. The pass-through's send, handed it by the server's, need await nothing more."""


class BodyTooLarge(Exception):
    """A request body over the size limit, announced or read."""


class RequestBody:
    """Reads a request's body when the runtime asks for it, within a size and a time limit."""

    __slots__ = ("complete", "limit", "receive", "timeout")

    def __init__(self, receive: Receive, limit: int, timeout: float) -> None:
        self.receive = receive
        self.limit = limit
        self.timeout = timeout
        self.complete = False  # read to its end

    async def __call__(self) -> bytes | None:
        try:
            body = await read_body(self.receive, self.limit, self.timeout)
            self.complete = True
            return body
        except BodyTooLarge:
            raise BodyError(
                413, f"request body is larger than the limit of {self.limit} bytes"
            ) from None


def has_body(scope: Scope, headers: list[list[str]], limit: int) -> bool:
    """Whether to read a body; ``BodyTooLarge`` if its announced length is over ``limit``."""
    # An HTTP/1.x request with neither Content-Length nor Transfer-Encoding has no body (RFC
    # 9112, 6.3). Not asking for one then saves the server re-arming its socket for reading.
    # HTTP/2 and 3 carry bodies without those headers, so they are always read.
    framed = scope.get("http_version", "1.1") not in ("1.0", "1.1")
    for name, value in headers:
        if name == "content-length":
            if value.isdigit() and int(value) > limit:
                raise BodyTooLarge
            framed = framed or value != "0"
        elif name == "transfer-encoding":
            framed = True
    return framed


async def read_body(receive: Receive, limit: int, timeout: float) -> bytes | None:
    """The whole body (None when empty); ``BodyTooLarge`` past ``limit`` bytes, ``BodyError``
    when the client leaves or stops sending for ``timeout`` seconds."""
    chunks: list[bytes] = []
    size = 0
    more = True
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout) as idle:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise BodyError(400, "the client closed the connection before its body ended")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge
                chunks.append(chunk)
                more = message.get("more_body", False)
                idle.reschedule(loop.time() + timeout)
    except TimeoutError:
        raise BodyError(408, f"the request body stopped arriving for {timeout:g} seconds") from None
    if size == 0:
        return None
    return b"".join(chunks)


# host[:port] as RFC 3986 allows it: a name, an IPv4 address or a bracketed IPv6 literal.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]*)?")
# Hosts seen valid: a server is reached under a few names, each checked once. Bounded.
_valid_hosts: set[str] = set()
_VALID_HOSTS_MAX = 256


def request_url(scope: Scope) -> tuple[str, str | None]:
    """The request's absolute URL, and the Host header's value if it is not a valid host.

    The path and query come from the request target alone (``raw_path``, still
    percent-encoded, as the browser host hands them over); Host only names the origin.
    """
    host, bad_host = request_host(scope)
    raw_path = scope.get("raw_path")
    if raw_path and not scope.get("root_path"):  # target_path's usual case, without its call
        path = raw_path.decode("latin-1")
    else:
        path = target_path(scope)
    query = scope.get("query_string", b"").decode("latin-1")
    url = f"{scope.get('scheme', 'http')}://{host}{path}" + (f"?{query}" if query else "")
    return url, bad_host


def request_host(scope: Scope) -> tuple[str, str | None]:
    """The origin's ``host[:port]`` (from Host, else the server's address), and the Host
    header's value if it is not a valid host."""
    host = bad_host = None
    for name, value in scope["headers"]:
        if name == b"host":  # h11 refuses a request with two
            host = value.decode("latin-1")
            if host not in _valid_hosts:
                if not _HOST.fullmatch(host):
                    host, bad_host = None, host
                elif len(_valid_hosts) < _VALID_HOSTS_MAX:
                    _valid_hosts.add(host)
            break
    if host is None:
        server = scope.get("server") or ("localhost", None)
        host = f"{server[0]}:{server[1]}" if server[1] else server[0]
    return host, bad_host


def target_path(scope: Scope) -> str:
    """The request target's path, still percent-encoded, below the ASGI root_path."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else _quote_path(scope["path"])
    # Routing happens below the ASGI root_path, as under any mount point. Most servers give
    # an empty one: quoting it costs more than the rest of this function.
    root_path = scope.get("root_path")
    if root_path:
        root_path = _quote_path(root_path)
        if path.startswith(root_path):
            path = path[len(root_path) :] or "/"
    return path


def _quote_path(path: str) -> str:
    # For a server that gives no raw_path (it is optional in ASGI): ``?`` and ``#`` must stay
    # in the path.
    return quote(path, safe="/:@!$&'()*+,;=~-._")


def client_address(scope: Scope) -> tuple[str, int] | None:
    """The peer's ``(host, port)`` from the scope (a list, from some servers), if known."""
    client = scope.get("client")
    return (client[0], client[1]) if client else None


# -- the scope an asgi plug-in's app gets ----------------------------------------------------


def scope_paths(prefix: str, path: str) -> tuple[str, bytes, str]:
    """A scope's ``path``, ``raw_path`` and ``root_path`` for ``path`` (as sent) below the
    mount ``prefix``: the path includes the root path, as the ASGI spec and Starlette's routing
    expect."""
    raw_path = prefix + path
    return (
        unquote(raw_path) if "%" in raw_path else raw_path,
        raw_path.encode("latin-1"),
        unquote(prefix) if "%" in prefix else prefix,
    )


def scope_headers(headers: list[list[str]]) -> list[tuple[bytes, bytes]]:
    """A request's headers for a scope: names in lower case, sorted by name (as ``fetch()``
    hands them to a service worker), a repeated name's values kept apart, in order."""
    pairs = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    pairs.sort(key=_first)
    return pairs


def _first(pair: tuple[bytes, bytes]) -> bytes:
    return pair[0]


_servers: dict[tuple[str, str], tuple[str, int]] = {}


def server_address(scheme: str, host: str) -> tuple[str, int]:
    """The scope's ``server``: ``(host, port)`` from the request's origin."""
    server = _servers.get((scheme, host))
    if server is None:
        name, colon, port = host.rpartition(":")
        if not colon or not port.isdigit() or name.endswith(":"):  # no port, or bare IPv6
            name, port = host, "443" if scheme == "https" else "80"
        server = (name.strip("[]"), int(port))
        if len(_servers) < 256:
            _servers[(scheme, host)] = server
    return server


# -- the answer ------------------------------------------------------------------------------

# The server frames the body itself; a plug-in's (or an upstream's) framing headers would lie.
_FRAMING = {"content-length", "transfer-encoding", "connection", "keep-alive"}
# Header names as ASGI wants them (lower-case bytes), or None for framing headers. Answers use a
# small set of names, so encoding each once saves work on every response; the size bound keeps
# a plug-in that invents names from growing it without end.
_names: dict[str, bytes | None] = {}
_NAMES_MAX = 1024


def _asgi_name(name: str) -> bytes | None:
    lower = name.lower()
    encoded = None if lower in _FRAMING else lower.encode("latin-1")
    if len(_names) < _NAMES_MAX:
        _names[name] = encoded
    return encoded


def response_events(
    response: dict[str, Any], head: bool = False, unread: bool = False
) -> tuple[Message, Message]:
    """The ASGI ``http.response.start`` and ``http.response.body`` events of a wire answer;
    ``unread``: the request's body was not read to its end, so the connection closes."""
    body = response["body"]
    headers = []
    for name, value in response["headers"]:
        encoded = _names[name] if name in _names else _asgi_name(name)
        if encoded is not None:
            headers.append((encoded, value.encode("latin-1")))
    headers.append(HOST_HEADER)
    # A HEAD answer has no body to count, and 204 and 304 must not announce one (RFC 9110).
    # A stream's length is not known: the server sends it chunked.
    if not head and response["status"] not in (204, 304) and type(body) is bytes:
        headers.append((b"content-length", str(len(body)).encode()))
    if unread:  # reading a body nobody wants costs more than a new connection
        headers.append((b"connection", b"close"))
    return (
        {"type": "http.response.start", "status": response["status"], "headers": headers},
        {"type": "http.response.body", "body": body},
    )


async def send_parts(stream: Stream, send: Send, receive: Receive) -> None:
    """Send a streamed answer's parts as they come. A client that goes away closes the stream
    (the plug-in's generator with it); a stream that fails (already logged under an error id)
    raises, which makes the server drop the connection before the last chunk, so the client
    sees an incomplete answer rather than a short one that looks whole."""
    sending = asyncio.ensure_future(_relay(stream, send))
    gone = asyncio.ensure_future(disconnected(receive))
    try:
        await asyncio.wait({sending, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not sending.done():
            sending.cancel()
            await asyncio.wait({sending})
        else:
            sending.result()
    finally:
        gone.cancel()
        await stream.aclose()


async def _relay(stream: Stream, send: Send) -> None:
    async for part in stream:
        if part:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        # A generator that never awaits, to a client that reads fast or has gone (uvicorn's
        # send then returns at once), would never let the loop run: not the other requests,
        # not the watch for the client leaving. One turn of the loop per part.
        await asyncio.sleep(0)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def disconnected(receive: Receive) -> None:
    """Return once the client has gone (``http.disconnect``), dropping anything else."""
    while (await receive())["type"] != "http.disconnect":
        pass
