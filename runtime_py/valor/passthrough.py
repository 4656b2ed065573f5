"""The server host's short way to ``asgi`` plug-ins: the request's own ASGI exchange, passed on.

The server speaks ASGI already, so an ``asgi`` plug-in needs no wire message in between. The
runtime routes the request (``Runtime.plugin_at``); the app runs in the server's own task for
the request, with the scope, headers and body the message path gives it
(``AsgiPlugin.http_scope``), under the same limits, and its answer gets the same checks,
headers and error answers: the plug-in's ``timeout`` for its first part (the runtime's
deadline, watchdog included) and between parts, 500 with an error id for an app that fails
before answering, a logged ``StreamError`` (a broken answer) after. The browser host has no
ASGI server and keeps the message path; both hosts answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable
from time import perf_counter
from typing import Any

from .access import access_log, log_access, new_request_id
from .asgi_http import (
    BODY_FOLLOWS,
    HOST_HEADER,
    SENT,
    WHOLE_ANSWERS,
    BodyTooLarge,
    Message,
    Receive,
    RequestBody,
    Scope,
    Send,
    client_address,
    disconnected,
    has_body,
    request_host,
    response_events,
    scope_headers,
    scope_paths,
    server_address,
    target_path,
)
from .deadlines import DeadlineExceeded
from .errors import BodyError
from .failures import broken_error, failure_answer, idle_error
from .headers import first_value
from .kinds.asgi.core import AsgiPlugin
from .manifest import PluginSpec
from .outbound import CALLING, Calling
from .responses import error_message
from .routing import Mount, below, split_url
from .runtime import NOT_FROM_PLUGINS, Runtime
from .streaming import Stream, streamed
from .wire import (
    NO_BODY,
    ResponseMessage,
    WireError,
    http_answer,
    plain_asgi_headers,
    response_message,
)

# The answer's state, as far as the app has sent it.
WAITING, STREAMING, COMPLETE = 0, 1, 2
_UNKNOWN: Any = object()
_HTTP_1 = frozenset(["1.0", "1.1"])  # without Content-Length nor Transfer-Encoding, no body
_CACHED = 1024  # entries at most in each of the caches
_NONE: dict[Any, Any] = {}  # found nothing
# ``in`` on bytes tries its operand as an int first: a bytes operand costs it a TypeError.
_HASH = ord("#")
# What no field value may hold: uvicorn's check of an answer's values (its httptools module's
# HEADER_VALUE_RE, which valor.connections uses), without importing uvicorn here.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_INFO = logging.INFO
_new_call = object.__new__
_access_cache: dict[int, bool] = getattr(access_log, "_cache", {})  # logging's, by level
# Each whole answer's Content-Length header, by length, as a field and as a line (for
# send_whole): made once each. Bounded.
_lengths: dict[int, tuple[tuple[bytes, bytes], bytes]] = {}


class PassThrough:
    """Serves the requests that reach an ``asgi`` plug-in; ``active`` while one is mounted."""

    def __init__(self, runtime: Runtime, body_timeout: float, root_path: str = "") -> None:
        self.runtime = runtime
        self.deadlines = runtime.deadlines
        self.body_timeout = body_timeout
        self.root_path = root_path
        self.active = False
        # Where each raw path leads (None: not to an asgi plug-in), the scope's ``server`` and
        # the request's origin for each valid Host by scheme, and the header names seen in
        # the usual request: worked out once each (routes until the mounts change). Bounded.
        self._routes: dict[bytes, _Route | None] = {}
        self._servers: dict[str, dict[bytes, tuple[tuple[str, int], str]]] = {}
        self._plain_names: set[bytes] = set()
        runtime.subscribe(self._update)

    def _update(self) -> None:
        self.active = any(spec.type == "asgi" for spec in self.runtime.plugins)
        self._routes = {}

    def call(self, scope: Scope, receive: Receive, send: Send) -> _Call | None:
        """The call that serves the request if it reaches an ``asgi`` plug-in; None for any
        other request and for those the message path refuses before routing (a bad Host, a
        body announced too large), which it then answers."""
        try:  # the keys uvicorn's scope has: subscripts cost a third of get()'s calls
            raw_path = scope["raw_path"]
            root_path = scope["root_path"]
            query = scope["query_string"]
            scheme = scope["scheme"]
            version = scope["http_version"]
            client = scope["client"]
        except KeyError:  # any may be left out (ASGI's defaults)
            raw_path = scope.get("raw_path")
            root_path = scope.get("root_path")
            query = scope.get("query_string", b"")
            scheme = scope.get("scheme", "http")
            version = scope.get("http_version")
            client = scope.get("client")
        if raw_path and not root_path and not self.root_path:
            # The usual server's request: routes are cached by the raw path.
            route = self._routes.get(raw_path, _UNKNOWN)
            if route is _UNKNOWN:
                route = self._route(raw_path.decode("latin-1"), "", raw_path)
        else:
            full_path = raw_path.decode("latin-1") if raw_path and not root_path else None
            route = self._route(full_path or target_path(scope), root_path or self.root_path)
        if route is None:
            return None
        if _HASH in query:  # the message path's URL would end at it
            return None
        raw = scope["headers"]
        named = dict(raw)
        # The usual request: each name once, in lower case (as ASGI servers give them), no body.
        if (
            named
            and len(named) == len(raw)
            and version in _HTTP_1
            and (named.keys() <= self._plain_names or self._plain(named))
        ):
            host = named.get(b"host")
            known = self._servers.get(scheme, _NONE).get(host)
            if known is None:
                known = self._server(scope, scheme, host)
                if known is None:
                    return None
            server, origin = known
            request_id = named.get(b"x-request-id")
            correlation_id = request_id.decode("latin-1") if request_id else new_request_id()
            general = None
        else:
            general = self._general(scope, scheme)
            if general is None:
                return None
            correlation_id, origin, with_body, headers, server = general
        # Built here, not by __init__: a frame less per request.
        call = _new_call(_Call)
        call.passthrough = self
        call.runtime = self.runtime
        call.route = route
        call.spec = route.spec
        call.scope = scope
        call.server_receive = receive
        call.server_send = send
        call.correlation_id = correlation_id
        call.origin = origin  # for the app's calls out
        call.started = perf_counter()
        call.upper = method = scope["method"].upper()  # the runtime's view: "head" too
        call.body = b""
        call.start = call.deadline = call.watcher = None
        call.state = WAITING
        call.gone = call.idle = call.stopped = False
        if general is None:
            # The app's scope (AsgiPlugin.http_scope's), from the route's: one copy, the
            # request's own entries set.
            app_scope = route.scope.copy()
            app_scope["method"] = "GET" if method == "HEAD" else method
            app_scope["scheme"] = scheme
            app_scope["query_string"] = query
            headers = [*raw]
            if len(headers) > 1:
                headers.sort()  # by name: each is there once
            app_scope["headers"] = headers
            app_scope["server"] = server
            if client:
                app_scope["client"] = (client[0], client[1])
            app_scope["state"] = route.state.copy()
            app_scope["extensions"] = {"valor": {"request_id": correlation_id}}
            call.app_scope = app_scope
            return call
        if with_body:
            call.body = None  # read before the app is called
        call.app_scope = route.plugin.http_scope(
            "GET" if method == "HEAD" else method,
            scheme,
            route.paths,
            query,
            headers,
            server,
            client_address(scope),
            correlation_id,
        )
        return call

    def _plain(self, named: dict[bytes, bytes]) -> bool:
        """Whether the request's header names (each there once) are as the usual request has
        them: in lower case, no body announced. Such names are remembered (bounded)."""
        if b"content-length" in named or b"transfer-encoding" in named:
            return False
        if not b"".join(named).islower():
            return False
        if len(self._plain_names) < _CACHED:
            self._plain_names.update(named)
        return True

    def _general(
        self, scope: Scope, scheme: str
    ) -> tuple[str, str, bool, list[tuple[bytes, bytes]], tuple[str, int]] | None:
        """``call``'s steps for any request, the message path's own on decoded headers: the
        correlation id, the origin, whether a body is to be read, the scope's headers and
        ``server``; None for a request the message path refuses."""
        host, bad_host = request_host(scope)
        if bad_host is not None:
            return None
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        runtime = self.runtime
        try:
            with_body = has_body(scope, headers, runtime.max_body_size)
        except BodyTooLarge:
            return None
        correlation_id = first_value(headers, "x-request-id") or new_request_id()
        origin = f"{scheme}://{host}"
        return (
            correlation_id,
            origin,
            with_body,
            scope_headers(headers),
            server_address(scheme, host),
        )

    def _route(self, full_path: str, root_path: str, key: bytes | None = None) -> _Route | None:
        """Where ``full_path`` leads, cached under ``key`` (the raw path) if given."""
        found = self.runtime.plugin_at(full_path)
        route = None
        if found is not None and type(found[0].plugin) is AsgiPlugin and "#" not in full_path:
            mount, raw_path, path = found
            prefix = self.runtime.forwarded_prefix(mount, root_path)
            paths = scope_paths(prefix, below(raw_path, path, mount.spec.prefix))
            route = _Route(mount, paths, full_path)
        if key is not None and len(self._routes) < _CACHED:
            self._routes[key] = route
        return route

    def _server(
        self, scope: Scope, scheme: str, host: bytes | None
    ) -> tuple[tuple[str, int], str] | None:
        """The scope's ``server`` and the request's origin for its Host, None for a bad
        Host."""
        host_name, bad_host = request_host(scope)
        if bad_host is not None:
            return None
        known = server_address(scheme, host_name), f"{scheme}://{host_name}"
        servers = self._servers.setdefault(scheme, {})
        if host is not None and len(servers) < _CACHED:
            servers[host] = known
        return known


class _Route:
    """Where a path leads: the mount, and the app scope's paths."""

    __slots__ = (
        "full_path",
        "lines",
        "mount",
        "name",
        "paths",
        "plugin",
        "scope",
        "spec",
        "state",
        "tail",
    )

    def __init__(self, mount: Mount, paths: tuple[str, bytes, str], full_path: str) -> None:
        self.full_path = full_path
        self.mount = mount
        self.spec = mount.spec
        self.name = mount.spec.name.encode("latin-1")  # its x-valor-plugin
        self.tail = ((b"x-valor-plugin", self.name), HOST_HEADER)  # for every whole answer
        self.lines = b"".join(b"%s: %s\r\n" % field for field in self.tail)  # for send_whole
        self.plugin: AsgiPlugin = mount.plugin  # type: ignore[assignment]
        self.paths = paths
        self.state = self.plugin.state
        # What the app's scope has for every request here; PassThrough.call sets the rest.
        self.scope = self.plugin.http_scope("GET", "http", paths, b"", [], ("", 0), None, "")


class _Call:
    """One request to an ASGI app: its ``receive`` and ``send``, and the answer they carry.
    Slots, each set at once (by ``PassThrough.call``): an attribute read through the class (a
    default) costs several times one read from a slot.

    It is also the app's ``outbound.Calling`` while it runs (``CALLING``): it has that named
    tuple's fields and ``chain``, so no tuple is made per request."""

    __slots__ = (
        "app_scope",
        "body",
        "caller",
        "correlation_id",
        "deadline",
        "gone",
        "idle",
        "origin",
        "passthrough",
        "route",
        "runtime",
        "scope",
        "server_receive",
        "server_send",
        "spec",
        "start",
        "started",
        "state",
        "stopped",
        "task",
        "upper",
        "watcher",
    )
    app_scope: Scope
    body: bytes | None  # for the app's first receive(); None: to be read first
    start: Message | None
    task: asyncio.Task[Any]
    deadline: asyncio.Task[Any] | None  # the next part's, while the app works on it
    watcher: asyncio.Task[None] | None  # for a client that goes away
    runtime: Runtime  # Calling's fields: the runtime, the plug-in, the call to it, if any
    spec: PluginSpec
    caller: Calling | None

    chain = Calling.chain

    async def run(self) -> None:
        passthrough = self.passthrough
        route = self.route
        spec = route.spec
        if self.body is None:
            try:
                reader = RequestBody(
                    self.server_receive, passthrough.runtime.max_body_size, passthrough.body_timeout
                )
                self.body = await reader() or b""
            except BodyError as exc:
                await self.answer(error_message(exc.status, exc.detail), unread=True)
                return
        # The request's task, which its deadline cancels (Deadlines.start reads it).
        task = self.task = self.deadline = passthrough.deadlines.start(spec.timeout)  # type: ignore[assignment]
        # For its calls out (valor.http_client()), as the message path's Runtime._call does.
        self.caller = CALLING.get()
        calling = CALLING.set(self)  # type: ignore[arg-type]  # a Calling but for its type
        try:
            await route.plugin.app(self.app_scope, self.receive, self.send)
            if self.state != COMPLETE and not (self.gone or self.stopped):
                what = "an answer" if self.start is None else "the rest of its answer"
                raise RuntimeError(f"the ASGI app returned without sending {what}")
        except BaseException as exc:
            expired = self._stop_deadline()
            if self.state == WAITING:
                await self.answer(failure_answer(spec, exc, expired))
            elif (
                self.state == STREAMING
                and not (self.gone or self.stopped)
                and (self.idle or expired or isinstance(exc, DeadlineExceeded))
            ):
                raise idle_error(spec.name, spec.timeout) from None
            elif self.gone or self.stopped:
                pass  # as the message path closes the stream: the app is stopped, quietly
            elif self.state == STREAMING and isinstance(exc, Exception):
                raise broken_error(spec.name, exc) from exc
            elif self.state == COMPLETE and isinstance(exc, Exception):
                route.plugin.failed_after_answer(exc)
            else:
                raise
        finally:
            CALLING.reset(calling)
            if self.deadline is not None:
                self._stop_deadline()
            if self.watcher is not None:
                self._quiet()
            if (self.gone or self.idle) and task.cancelling():  # type: ignore[union-attr]
                task.uncancel()  # type: ignore[union-attr]  # our own cancellation, not the server's

    async def receive(self) -> Message:
        """The body, read before the app was called, then only ``http.disconnect``."""
        body = self.body
        if body is not None:
            self.body = None
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected(self.server_receive)
        return {"type": "http.disconnect"}

    def send(self, event: Message) -> Awaitable[None]:
        # Not a coroutine function: the usual answer's two events are handled here and hand
        # back the server's awaitable (SENT from Valor's protocols, which have sent it), so
        # that they make no coroutine of their own; any other event is _send's.
        kind = event["type"]
        if kind == "http.response.start":
            if self.start is not None:
                return self._send(event)  # its error
            self.start = event
            return SENT
        if kind != "http.response.body":
            return SENT  # as the message path: other events (extensions) are not offered
        start = self.start
        if self.state == WAITING and start is not None and not event.get("more_body"):
            # The usual answer, whole and plain: its headers pass as the app sent them.
            # (Neither gone nor stopped while it waits: those come after a first part.)
            part = event.get("body", b"")
            if type(part) is not bytes:
                part = bytes(part)
            status = start.get("status")
            if (
                self.upper != "HEAD"
                and type(status) is int
                and 200 <= status <= 599
                and not (part and status in NO_BODY)
            ):
                headers = plain_asgi_headers(start.get("headers", ()), NOT_FROM_PLUGINS)
                if headers is not None:
                    deadline = self.deadline
                    if deadline is not None:
                        self.deadline = None
                        if self.passthrough.deadlines.stop(deadline):
                            # It caught its cancellation and answered late.
                            expired = DeadlineExceeded()
                            return self.answer(failure_answer(self.route.spec, expired, True))
                    # With the runtime's headers, as _events adds them.
                    self.state = COMPLETE
                    route = self.route
                    correlation_id = self.correlation_id.encode("latin-1")
                    length = None  # none for 204 and 304
                    if status != 204 and status != 304:
                        size = len(part)
                        try:  # a subscript, not get(): no method call for a length seen
                            length = _lengths[size]
                        except KeyError:
                            length = (
                                (b"content-length", b"%d" % size),
                                b"content-length: %d\r\n" % size,
                            )
                            if len(_lengths) < _CACHED:
                                _lengths[size] = length
                    # isEnabledFor's answer from the logger's own cache (cleared when levels
                    # change) without its call; the call when not cached. (A disabled logger
                    # may be cached True: its line is then dropped by access_log.info.)
                    logged = _access_cache.get(_INFO)
                    if logged is None:
                        logged = access_log.isEnabledFor(_INFO)
                    if logged:
                        self._log(status)
                    send = self.server_send
                    # Valor's own protocol takes the answer whole: the app's fields as checked
                    # here, then the runtime's as lines (an id from the request checked as the
                    # server would check it).
                    server = getattr(send, "__self__", None)
                    if type(server) in WHOLE_ANSWERS and (
                        correlation_id.isalnum() or not _CONTROL.search(correlation_id)
                    ):
                        lines = (
                            b"x-correlation-id: ",
                            correlation_id,
                            b"\r\n",
                            route.lines,
                            b"" if length is None else length[1],
                        )
                        if server.send_whole(status, headers, lines, part):
                            return SENT
                    headers.append((b"x-correlation-id", correlation_id))
                    headers += route.tail
                    if length is not None:
                        headers.append(length[0])
                    # The whole body follows at once: the server's protocols write both in one.
                    sent = send(
                        {
                            "type": "http.response.start",
                            "status": status,
                            "headers": headers,
                            BODY_FOLLOWS: True,
                        }
                    )
                    body = {"type": "http.response.body", "body": part}
                    if sent is SENT:  # sent already: nothing to await before the body
                        return send(body)
                    return _then(sent, send, body)
        return self._send(event)

    async def _send(self, event: Message) -> None:
        """``send`` for any event but the usual answer's."""
        kind = event["type"]
        if kind == "http.response.start":
            raise RuntimeError("http.response.start was sent twice")
        if self.stopped:
            raise asyncio.CancelledError
        if self.gone:
            raise OSError("the client went away")  # as ASGI 2.4 asks
        if self.start is None:
            raise RuntimeError("http.response.body was sent before http.response.start")
        if self.state == COMPLETE:
            raise RuntimeError("http.response.body was sent after the last part")
        part = event.get("body", b"")
        if type(part) is not bytes:
            part = bytes(part)
        more = event.get("more_body", False)
        if self.state == WAITING:
            answer, refused = self._head(self.start, part, more)
            if refused:
                await self._refuse(answer, more)
                return
            if self.upper == "HEAD":
                part, stream = b"", False
            else:
                stream = more
            answer["body"] = part
            self.state = STREAMING if stream else COMPLETE
            # A stream's length is not known: the server sends it chunked.
            start, body = self._events(answer, no_length=stream)
            send = self.server_send
            if not stream:
                start[BODY_FOLLOWS] = True
            await send(start)
            if not stream:
                await send(body)
                if more:  # a HEAD: the rest of the stream is not wanted
                    self.stopped = True
                    raise asyncio.CancelledError
                return
            if part:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            self.watcher = asyncio.get_running_loop().create_task(disconnected(self.server_receive))
            self.watcher.add_done_callback(self._client_gone)
            await self._next_part()
            return
        if self._stop_deadline():  # it caught its cancellation and sent this part late
            self.idle = True
            raise asyncio.CancelledError
        if more:
            if part:
                await self.server_send(
                    {"type": "http.response.body", "body": part, "more_body": True}
                )
            await self._next_part()
            return
        self.state = COMPLETE
        self._quiet()
        await self.server_send({"type": "http.response.body", "body": part, "more_body": False})

    def _head(self, start: Message, part: bytes, more: bool) -> tuple[ResponseMessage, bool]:
        """The answer the app began, checked as the message path checks it, and False; or the
        error answer it gives instead, and True. Checked in its order: what fails in the app's
        exchange, then the deadline, then the answer's checks (``wire.http_answer``)."""
        spec = self.route.spec
        try:
            wire = _wire_answer(start["status"], start, part, more)
        except Exception as exc:
            return failure_answer(spec, exc, self._stop_deadline()), True
        if self.passthrough.deadlines.stop(self.deadline):  # type: ignore[arg-type]
            self.deadline = None
            return failure_answer(spec, DeadlineExceeded(), True), True
        self.deadline = None
        try:
            return http_answer(response_message(wire), drop=NOT_FROM_PLUGINS), False
        except WireError as exc:
            return failure_answer(spec, exc, False), True

    def _log(self, status: int) -> None:
        """A whole plain answer's access-log line, as ``Runtime.finish`` writes it."""
        path = split_url(self.route.full_path)[1]
        spec = self.route.spec
        log_access(spec.name, status, self.scope["method"], path, self.started, self.correlation_id)

    async def _refuse(self, answer: Any, more: bool) -> None:
        """Answer with the runtime's error instead of the app's answer; a stream is cut short
        (the app stopped), a whole answer's app may finish its work."""
        await self.answer(answer)
        if more:
            self.stopped = True
            raise asyncio.CancelledError

    async def answer(self, response: Any, unread: bool = False) -> None:
        """Send an answer of the runtime's own (an error), as the message path would."""
        if self.upper == "HEAD":
            response["body"] = b""
        self.state = COMPLETE
        start, body = self._events(response, unread=unread)  # bytes: an error's JSON
        await self.server_send(start)
        await self.server_send(body)

    def _events(
        self, response: ResponseMessage, unread: bool = False, no_length: bool = False
    ) -> tuple[Message, Message]:
        """An answer's ASGI events, with the runtime's headers and access-log line
        (``Runtime.finish``), as the message path sends it."""
        message: Any = {"url": self.route.full_path, "method": self.scope["method"], "headers": []}
        runtime = self.passthrough.runtime
        runtime.finish(message, response, self.correlation_id, self.route.mount, self.started)
        # The server's view of a HEAD: no content-length, no body.
        head = self.scope["method"] == "HEAD" or no_length
        return response_events(response, head, unread)  # type: ignore[arg-type]

    def _stop_deadline(self) -> bool:
        """Stop the first part's deadline, if it runs; whether it had passed."""
        if self.deadline is None:
            return False
        task, self.deadline = self.deadline, None
        return self.passthrough.deadlines.stop(task)

    async def _next_part(self) -> None:
        """Give the app its timeout for the next part, under the runtime's deadlines (the
        watchdog stops an app that holds the loop between parts), and let the loop turn: an
        app that never awaits, to a client that has gone (whose send returns at once), would
        otherwise never let the client's leaving be noticed, nor any other request run."""
        self.deadline = self.passthrough.deadlines.start(self.route.spec.timeout, self.task)
        await asyncio.sleep(0)

    def _client_gone(self, watcher: asyncio.Task[None]) -> None:
        if self.state == STREAMING and not watcher.cancelled():
            self.gone = True
            self.task.cancel()

    def _quiet(self) -> None:
        """Stop watching the client and the time between parts."""
        self._stop_deadline()
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None


async def _then(first: Awaitable[None], send: Send, second: Message) -> None:
    """Await the server's send of one event, then send the next."""
    await first
    await send(second)


def _wire_answer(status: Any, start: Message, part: bytes, more: bool) -> dict[str, Any]:
    """The answer as the message path has it before its checks: its headers decoded, a stream
    (refused with a status that has no body) or its bytes."""
    headers = []
    for name, value in start.get("headers", ()):  # a loop: cheaper than a comprehension on 3.11
        headers.append([name.decode("latin-1"), value.decode("latin-1")])
    answer: dict[str, Any] = {"status": status, "headers": headers, "body": part}
    if more:
        answer["body"] = Stream(_no_parts())
        streamed(answer)  # raises WireError for a 204, 205 or 304
    return answer


async def _no_parts() -> Any:
    return
    yield
