"""The server host's short way to ``asgi`` plug-ins: the request's own ASGI exchange, passed on.

The server speaks ASGI already, so an ``asgi`` plug-in needs no wire message in between. The
runtime routes the request (``Runtime.plugin_at``); the app runs in the server's own task for
the request, with the scope, headers and body the message path gives it (``AsgiPlugin.scope``),
under the same limits, and its answer gets the same checks, headers and error answers: the
plug-in's ``timeout`` for its first part and between parts, 500 with an error id for an app
that fails before answering, a logged ``StreamError`` (a broken answer) after. The browser
host has no ASGI server and keeps the message path; both hosts answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import re
from time import perf_counter
from typing import Any

from .deadlines import DeadlineExceeded
from .errors import BodyError
from .loaders.asgi import AsgiPlugin
from .responses import error_message
from .runtime import (
    _NOT_FROM_PLUGINS,
    Mount,
    Runtime,
    _below,
    _header,
    access_log,
    log_access,
    new_request_id,
)
from .server import (
    HOST_HEADER,
    BodyTooLarge,
    Message,
    Receive,
    Scope,
    Send,
    _Body,
    _disconnect,
    _has_body,
    _host,
    _target_path,
    send_answer,
)
from .streaming import Stream, broken_error, idle_error, streamed
from .wire import _TOKEN, _TRIMMED_VALUE, _VALUE, NO_BODY, WireError, http_answer, response_message

# The answer's state, as far as the app has sent it.
WAITING, STREAMING, COMPLETE = 0, 1, 2


class PassThrough:
    """Serves the requests that reach an ``asgi`` plug-in; ``active`` while one is mounted."""

    def __init__(self, runtime: Runtime, body_timeout: float) -> None:
        self.runtime = runtime
        self.body_timeout = body_timeout
        self.active = False
        runtime.subscribe(self._update)

    def _update(self) -> None:
        self.active = any(spec.type == "asgi" for spec in self.runtime.plugins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Serve the request if it reaches an ``asgi`` plug-in; False, with nothing read or
        sent, for any other request and for those the message path refuses before routing (a
        bad Host, a body announced too large), which it then answers."""
        host, bad_host = _host(scope)
        full_path = _target_path(scope)
        query = scope.get("query_string", b"")
        if bad_host is not None or "#" in full_path or b"#" in query:
            return False
        runtime = self.runtime
        route = runtime.plugin_at(full_path)
        if route is None or type(route[0].plugin) is not AsgiPlugin:
            return False
        started = perf_counter()
        headers = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
        try:
            has_body = _has_body(scope, headers, runtime.max_body_size)
        except BodyTooLarge:
            return False
        mount, raw_path, path = route
        spec = mount.spec
        request_id = _header(headers, "x-request-id")
        correlation_id = request_id or new_request_id()
        call = _Call(runtime, mount, scope, receive, send, full_path, correlation_id, started)
        if has_body:
            try:
                call.body = await _Body(receive, runtime.max_body_size, self.body_timeout)() or b""
            except BodyError as exc:
                await call.answer(error_message(exc.status, exc.detail), unread=True)
                return True
        forwarded = runtime.forwarded_headers(headers, spec, correlation_id, request_id)
        app_scope = mount.plugin.scope(  # type: ignore[attr-defined]
            "GET" if call.upper == "HEAD" else call.upper,
            scope.get("scheme", "http"),
            host,
            _below(raw_path, path, spec.prefix),
            query.decode("latin-1"),
            forwarded,
        )
        await call.run(app_scope)
        return True


class _Call:
    """One request to an ASGI app: its ``receive`` and ``send``, and the answer they carry."""

    __slots__ = (
        "body",
        "correlation_id",
        "deadline",
        "full_path",
        "gone",
        "head",
        "idle",
        "mount",
        "runtime",
        "scope",
        "server_receive",
        "server_send",
        "start",
        "started",
        "state",
        "stopped",
        "task",
        "timer",
        "upper",
        "watcher",
    )

    def __init__(
        self,
        runtime: Runtime,
        mount: Mount,
        scope: Scope,
        receive: Receive,
        send: Send,
        full_path: str,
        correlation_id: str,
        started: float,
    ) -> None:
        self.runtime = runtime
        self.mount = mount
        self.scope = scope
        self.server_receive = receive
        self.server_send = send
        self.full_path = full_path
        self.correlation_id = correlation_id
        self.started = started
        self.upper = scope["method"].upper()  # the runtime's view: "head" is a HEAD too
        self.head = scope["method"] == "HEAD"  # the server's: no content-length, no body
        self.body: bytes | None = b""  # for the app's first receive()
        self.start: Message | None = None
        self.state = WAITING
        self.task: asyncio.Task[Any] | None = None
        self.deadline: asyncio.Task[Any] | None = None  # the first part's, while it runs
        self.timer: asyncio.TimerHandle | None = None  # between parts
        self.watcher: asyncio.Task[None] | None = None  # for a client that goes away
        self.gone = self.idle = self.stopped = False

    async def run(self, scope: Scope) -> None:
        runtime, spec = self.runtime, self.mount.spec
        self.task = asyncio.current_task()
        self.deadline = runtime._deadlines.start(spec.timeout)
        try:
            await self.mount.plugin.app(scope, self.receive, self.send)  # type: ignore[attr-defined]
            if self.state != COMPLETE and not (self.gone or self.stopped):
                what = "an answer" if self.start is None else "the rest of its answer"
                raise RuntimeError(f"the ASGI app returned without sending {what}")
        except BaseException as exc:
            if self.state == WAITING:
                expired = self._stop_deadline()
                await self.answer(runtime.failure_answer(spec, exc, expired))
            elif self.idle:
                raise idle_error(spec.name, spec.timeout) from None
            elif self.gone or self.stopped:
                pass  # as the message path closes the stream: the app is stopped, quietly
            elif self.state == STREAMING and isinstance(exc, Exception):
                raise broken_error(spec.name, exc) from exc
            elif self.state == COMPLETE and isinstance(exc, Exception):
                self.mount.plugin.failed_after_answer(exc)  # type: ignore[attr-defined]
            else:
                raise
        finally:
            self._stop_deadline()
            self._quiet()
            if (self.gone or self.idle) and self.task.cancelling():
                self.task.uncancel()  # our own cancellation, not the server's

    async def receive(self) -> Message:
        """The body, read before the app was called, then only ``http.disconnect``."""
        body = self.body
        if body is not None:
            self.body = None
            return {"type": "http.request", "body": body, "more_body": False}
        await _disconnect(self.server_receive)
        return {"type": "http.disconnect"}

    async def send(self, event: Message) -> None:
        kind = event["type"]
        if kind == "http.response.start":
            if self.start is not None:
                raise RuntimeError("http.response.start was sent twice")
            self.start = event
            return
        if kind != "http.response.body":
            return  # as the message path: other events (extensions) are not offered
        if self.stopped:
            raise asyncio.CancelledError
        if self.start is None:
            raise RuntimeError("http.response.body was sent before http.response.start")
        if self.state == COMPLETE:
            raise RuntimeError("http.response.body was sent after the last part")
        part = event.get("body", b"")
        if type(part) is not bytes:
            part = bytes(part)
        more = event.get("more_body", False)
        if self.state == WAITING:
            await self._first(self.start, part, more)
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if more:
            if part:
                await self.server_send(
                    {"type": "http.response.body", "body": part, "more_body": True}
                )
            self._idle_from_now()
            return
        self.state = COMPLETE
        self._quiet()
        await self.server_send({"type": "http.response.body", "body": part, "more_body": False})

    async def _first(self, start: Message, part: bytes, more: bool) -> None:
        """The answer's head and first part, checked and sent as the message path does, in its
        order: what fails in the app's exchange, then the deadline, then the answer's checks."""
        spec = self.mount.spec
        status = start["status"]
        headers = _answer_headers(status, start, part, more)
        wire = None
        if headers is None:
            try:
                wire = _wire_answer(status, start, part, more)
            except Exception as exc:
                expired = self._stop_deadline()
                return await self._refuse(self.runtime.failure_answer(spec, exc, expired), more)
        if self._stop_deadline():  # it answered after its deadline
            return await self._refuse(
                self.runtime.failure_answer(spec, DeadlineExceeded(), True), more
            )
        if wire is not None:
            try:
                wire = http_answer(response_message(wire), drop=_NOT_FROM_PLUGINS)
            except WireError as exc:
                return await self._refuse(self.runtime.failure_answer(spec, exc, False), more)
            status = wire["status"]
            headers = [
                (n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in wire["headers"]
            ]
        assert headers is not None
        if self.upper == "HEAD":
            part, stream = b"", False
        else:
            stream = more
        headers.append((b"x-correlation-id", self.correlation_id.encode("latin-1")))
        headers.append((b"x-valor-plugin", spec.name.encode("latin-1")))
        headers.append(HOST_HEADER)
        if not self.head and status not in (204, 304) and not stream:
            headers.append((b"content-length", str(len(part)).encode()))
        if access_log.isEnabledFor(logging.INFO):
            method = self.scope["method"]
            log_access(spec.name, status, method, self.full_path, self.started, self.correlation_id)
        send = self.server_send
        self.state = STREAMING if stream else COMPLETE
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if not stream:
            await send({"type": "http.response.body", "body": part})
            if more:  # a HEAD: the rest of the stream is not wanted
                self.stopped = True
                raise asyncio.CancelledError
            return
        if part:
            await send({"type": "http.response.body", "body": part, "more_body": True})
        self.watcher = asyncio.get_running_loop().create_task(_disconnect(self.server_receive))
        self.watcher.add_done_callback(self._client_gone)
        self._idle_from_now()

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
        message = {"url": self.full_path, "method": self.scope["method"], "headers": []}
        self.runtime.finish(message, response, self.correlation_id, self.mount, self.started)  # type: ignore[arg-type]
        self.state = COMPLETE
        await send_answer(response, self.head, unread, self.server_send, self.server_receive)

    def _stop_deadline(self) -> bool:
        """Stop the first part's deadline, if it runs; whether it had passed."""
        if self.deadline is None:
            return False
        task, self.deadline = self.deadline, None
        return self.runtime._deadlines.stop(task)

    def _idle_from_now(self) -> None:
        loop = asyncio.get_running_loop()
        self.timer = loop.call_at(loop.time() + self.mount.spec.timeout, self._idle_expired)

    def _idle_expired(self) -> None:
        self.timer = None
        if self.state == STREAMING and self.task is not None:
            self.idle = True
            self.task.cancel()

    def _client_gone(self, watcher: asyncio.Task[None]) -> None:
        if self.state == STREAMING and not watcher.cancelled() and self.task is not None:
            self.gone = True
            self.task.cancel()

    def _quiet(self) -> None:
        """Stop watching the client and the time between parts."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None


def _wire_answer(status: Any, start: Message, part: bytes, more: bool) -> dict[str, Any]:
    """The answer as the message path has it before its checks: its headers decoded, a stream
    (refused with a status that has no body) or its bytes."""
    headers = [
        [name.decode("latin-1"), value.decode("latin-1")]
        for name, value in start.get("headers", ())
    ]
    answer: dict[str, Any] = {"status": status, "headers": headers, "body": part}
    if more:
        answer["body"] = Stream(_no_parts())
        streamed(answer)  # raises WireError for a 204, 205 or 304
    return answer


async def _no_parts() -> Any:
    return
    yield


# Header names of answers checked once each: the name ASGI sends (lower case), or None for a
# name the runtime drops. Bounded, so an app that invents names cannot grow it without end.
_names: dict[bytes, bytes | None] = {}
_NAMES_MAX = 1024
_TOKEN_BYTES = re.compile(_TOKEN.pattern.encode())
_TRIMMED_VALUE_BYTES = re.compile(_TRIMMED_VALUE.pattern.encode())
_VALUE_BYTES = re.compile(_VALUE.pattern.encode())


def _answer_headers(
    status: Any, start: Message, part: bytes, more: bool
) -> list[tuple[bytes, bytes]] | None:
    """An app's answer headers as the message path sends them (lower-case names, values
    trimmed, the runtime's own and framing headers dropped), checked on the bytes as it checks
    them (``wire.http_answer``); None for anything it would refuse, or that is not plain."""
    if (
        type(status) is not int
        or not 200 <= status <= 599
        or (status in NO_BODY and (part or more))
    ):
        return None
    headers = []
    for pair in start.get("headers", ()):
        name, value = pair
        if type(name) is not bytes or type(value) is not bytes:
            return None
        lower = _names.get(name, False)
        if lower is False:
            if not _TOKEN_BYTES.fullmatch(name):
                return None
            lower = name.lower()
            if lower.decode() in _NOT_FROM_PLUGINS:
                lower = None
            if len(_names) < _NAMES_MAX:
                _names[name] = lower
        if lower is None:
            continue
        if not _TRIMMED_VALUE_BYTES.fullmatch(value):
            if not _VALUE_BYTES.fullmatch(value):
                return None
            value = value.strip(b" \t")
        headers.append((lower, value))
    return headers
