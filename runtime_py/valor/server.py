"""The server host: an ASGI app that answers HTTP with a ``Runtime`` (CPython only)."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .errors import BodyError
from .kinds import Loader, server_loaders
from .manifest import load_manifest
from .responses import error_message
from .runtime import DEFAULT_MAX_BODY_SIZE, Runtime
from .status import REASONS
from .store.urls import default_url, open_backend
from .streaming import Stream

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("valor")
DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may go without a byte arriving (408 past it), as nginx's
``client_body_timeout``."""

SERVER_LOADERS: dict[str, Loader] = server_loaders()
"""Every plug-in kind the server host can load."""


class BodyTooLarge(Exception):
    pass


class _Body:
    """Reads a request's body when the runtime asks for it, within a size and a time limit."""

    __slots__ = ("complete", "limit", "receive", "timeout")

    def __init__(self, receive: Receive, limit: int, timeout: float) -> None:
        self.receive = receive
        self.limit = limit
        self.timeout = timeout
        self.complete = False  # read to its end

    async def __call__(self) -> bytes | None:
        try:
            body = await _read_body(self.receive, self.limit, self.timeout)
            self.complete = True
            return body
        except BodyTooLarge:
            raise BodyError(
                413, f"request body is larger than the limit of {self.limit} bytes"
            ) from None


class ValorApp:
    """ASGI app. Loads the manifest at lifespan start-up (or on the first request under a
    server that does not run lifespan)."""

    def __init__(
        self,
        runtime: Runtime,
        manifest_path: str | Path | None,
        strict: bool,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        passthrough: bool = True,
        store_url: str | None = None,
        root_path: str = "",
    ) -> None:
        self.runtime = runtime
        self.store_url = store_url
        self.manifest_path = manifest_path
        self.strict = strict
        self.body_timeout = body_timeout
        self.root_path = root_path.rstrip("/")
        self._loaded = False
        self._loading: asyncio.Future[None] | None = None
        from .passthrough import PassThrough  # it builds on this module

        # Requests to asgi plug-ins skip the wire message: the app gets this exchange.
        self._passthrough = (
            PassThrough(runtime, body_timeout, self.root_path) if passthrough else None
        )

    async def startup(self) -> None:
        """Load the manifest once; requests that come while it loads wait for it."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        if self.manifest_path is not None:
            manifest = load_manifest(self.manifest_path)
            if self.store_url is None:  # --store, else the manifest's, else SQLite beside it
                url = manifest.store or default_url(manifest.base_dir)
                self.runtime.store = open_backend(url, manifest.base_dir)
            log.info("store: %s", self.runtime.store.description)
            await self.runtime.load(manifest, strict=self.strict)
        self._loaded = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        if not self._loaded:
            await self.startup()
        passthrough = self._passthrough
        if passthrough is not None and passthrough.active:
            call = passthrough.call(scope, receive, send)
            if call is not None:
                await call.run()
                return
        # The request path, inline: each coroutine call costs more than most of its steps.
        runtime = self.runtime
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        url, bad_host = _url(scope)
        message = {
            "url": url,
            "method": scope["method"],
            "headers": headers,
            "body": None,
            "root_path": scope.get("root_path") or self.root_path,
            "client": _client(scope),
        }
        head = scope["method"] == "HEAD"
        if bad_host is not None:
            # Routing never looks at Host, but the origin a plug-in sees must be a real one.
            detail = f"the Host header {bad_host!r} is not a valid host[:port]"
            start, body = _response_events(
                runtime.finish(message, error_message(400, detail)), head
            )
            await send(start)
            await send(body)
            return
        # The body is read only once the runtime knows who will use it (see Runtime.handle).
        reader = None
        try:
            if _has_body(scope, headers, runtime.max_body_size):
                reader = _Body(receive, runtime.max_body_size, self.body_timeout)
        except BodyTooLarge:
            response = runtime.finish(message, runtime.too_large())
            unread = True
        else:
            response = await runtime.handle(message, reader)
            unread = reader is not None and not reader.complete
        start, body = _response_events(response, head, unread)
        await send(start)
        if type(response["body"]) is bytes:
            await send(body)
        else:
            await _send_parts(response["body"], send, receive)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _quiet_accept_errors(asyncio.get_running_loop())
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("%s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(
    manifest: str | Path | None = None,
    *,
    registry: bool = False,
    token: str | None = None,
    strict: bool = False,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    loaders: dict[str, Loader] | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    passthrough: bool = True,
    store: str | None = None,
    root_path: str = "",
) -> ValorApp:
    """Build the ASGI app for a manifest: by default ``$VALOR_MANIFEST``, else
    ``plugins/plugins.json``, so ``uvicorn --factory valor.server:create_app`` serves it.

    With ``registry`` on, ``/_plugins`` requires ``Authorization: Bearer <token>``; without a
    ``token`` one is generated and logged. With ``passthrough`` off, ``asgi`` plug-ins are
    answered through the wire message, as in the browser host (``valor.passthrough``), for
    comparisons. ``root_path`` is the prefix a proxy serves the app under (and strips), as
    uvicorn's ``--root-path``: plug-ins see it in their ``x-forwarded-prefix`` and an ASGI
    app in its ``root_path``; an ASGI server's own ``root_path`` for the request wins.

    ``store`` is the plug-ins' store URL (``memory:``, ``sqlite:///PATH``, ``redis://...``);
    by default the manifest's ``store``, else ``valor-store.sqlite3`` beside the manifest.
    """
    if manifest is None:
        manifest = os.environ.get("VALOR_MANIFEST", "plugins/plugins.json")
    if registry and token is None:
        token = secrets.token_urlsafe(24)
        log.warning("registry enabled; its bearer token for this run is %s", token)
    runtime = Runtime(
        loaders if loaders is not None else SERVER_LOADERS,
        registry=registry,
        registry_token=token if registry else None,
        max_body_size=max_body_size,
        store=open_backend(store, Path.cwd()) if store else None,
    )
    use_runtime_reasons()
    return ValorApp(runtime, manifest, strict, body_timeout, passthrough, store or None, root_path)


def _client(scope: Scope) -> tuple[str, int] | None:
    """The peer's ``(host, port)`` from the scope (a list, from some servers), if known."""
    client = scope.get("client")
    return (client[0], client[1]) if client else None


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log running out of file descriptors once a minute instead of thousands of times a
    second: CPython 3.11's accept loop retries and logs up to ``backlog`` times per wake-up."""
    if loop.get_exception_handler() is not None:
        return
    last = [-60.0, 0]  # when the last line was written, how many were skipped since

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != "socket.accept() out of system resource":
            loop.default_exception_handler(context)
            return
        now = loop.time()
        if now - last[0] < 60:
            last[1] += 1
            return
        log.error(
            "cannot accept connections: %s (%d more since the last time); see --limit-concurrency"
            " and --timeout-headers",
            context.get("exception"),
            last[1],
        )
        last[0], last[1] = now, 0

    loop.set_exception_handler(handle)


def use_runtime_reasons() -> None:
    """Have uvicorn's status lines carry the runtime's reason phrases (``valor.status``), as
    the browser host's answers do. ASGI has no field for a reason; uvicorn takes it from the
    running Python's ``http.HTTPStatus``, whose phrases change between versions."""
    from uvicorn.protocols.http import h11_impl

    for status in h11_impl.STATUS_PHRASES:
        h11_impl.STATUS_PHRASES[status] = REASONS.get(status, "").encode()
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional
        return
    for status in httptools_impl.STATUS_LINE:
        line = f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        httptools_impl.STATUS_LINE[status] = line.encode()


def _has_body(scope: Scope, headers: list[list[str]], limit: int) -> bool:
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


async def _read_body(receive: Receive, limit: int, timeout: float) -> bytes | None:
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


def _url(scope: Scope) -> tuple[str, str | None]:
    """The request's absolute URL, and the Host header's value if it is not a valid host.

    The path and query come from the request target alone (``raw_path``, still
    percent-encoded, as the browser host hands them over); Host only names the origin.
    """
    host, bad_host = _host(scope)
    path = _target_path(scope)
    query = scope.get("query_string", b"").decode("latin-1")
    url = f"{scope.get('scheme', 'http')}://{host}{path}" + (f"?{query}" if query else "")
    return url, bad_host


def _host(scope: Scope) -> tuple[str, str | None]:
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


def _target_path(scope: Scope) -> str:
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


# Which host answered: the one header in which the two hosts' answers differ, by design.
HOST_HEADER = (b"x-valor-host", b"server")
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


def _response_events(
    response: dict[str, Any], head: bool = False, unread: bool = False
) -> tuple[Message, Message]:
    """The ASGI ``http.response.start`` and ``http.response.body`` events of an answer;
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


async def _send_parts(stream: Stream, send: Send, receive: Receive) -> None:
    """Send a streamed answer's parts as they come. A client that goes away closes the stream
    (the plug-in's generator with it); a stream that fails (already logged under an error id)
    raises, which makes the server drop the connection before the last chunk, so the client
    sees an incomplete answer rather than a short one that looks whole."""
    sending = asyncio.ensure_future(_relay(stream, send))
    gone = asyncio.ensure_future(_disconnect(receive))
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


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
