"""Limits on client connections for ``valor serve``: uvicorn's HTTP/1.1 protocols (httptools,
else h11), plus a time limit on reading a request's head, and on httptools a size limit too.

uvicorn times out idle keep-alive connections, but not a connection that never finishes its
request line and headers, so a few hundred silent or trickling sockets would hold their file
descriptors for ever (slowloris). Here a connection that has not sent a whole request head
``timeout_headers`` seconds after it opened, or after its previous answer, is closed, as
nginx's ``client_header_timeout`` does.

h11 refuses a head larger than 16 KiB (400); llhttp, under httptools, has no such limit, so
within the time limit a client could send headers without end. The httptools protocol answers
431 past the same size, as nginx's ``large_client_header_buffers`` does.

Both protocols check an answer's header names and values as uvicorn does (h11's rules, or
uvicorn's for httptools), but a name or value seen valid before is not checked again: the
checks were most of the cost of each header (about 8,000 instructions on either stack, a
regular expression call per name and per value), and an answer repeats most of its fields.

The httptools cycle also takes a whole answer in one call, ``send_whole`` (its fields checked
by the caller, no ASGI events made: ``valor.passthrough`` hands the usual answer of an
``asgi`` plug-in that way); it writes what uvicorn writes for the same two events.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import types
from collections.abc import Callable, Coroutine
from typing import Any

import h11
from h11._headers import _field_name_re, _field_value_re
from uvicorn.protocols.http import h11_impl
from uvicorn.protocols.http.flow_control import CLOSE_HEADER
from uvicorn.protocols.http.h11_impl import H11Protocol

from .asgi_http import BODY_FOLLOWS, SENT, WHOLE_ANSWERS
from .responses import error_message

DEFAULT_TIMEOUT_HEADERS = 10.0
MAX_HEAD_SIZE = 16 * 1024
"""Bytes a request line and headers may take, h11's default (uvicorn's
``h11_max_incomplete_event_size``)."""


def _timeout_headers() -> float:
    # Set through the environment: uvicorn builds protocols in each worker process itself.
    return float(os.environ.get("VALOR_TIMEOUT_HEADERS") or DEFAULT_TIMEOUT_HEADERS)


class HeadTimer:
    """What both protocols share: a timer for the request head, from when the connection
    opens or an answer ends, stopped with the connection. One timer per connection, moved
    lazily (when it fires it looks at when the head now awaited is due): a timer set on each
    answer and cancelled on each head cost about 29,000 instructions per request on h11
    (callgrind), 4 % of its whole request. Each protocol says whether it is answering.

    uvicorn's keep-alive limit (``timeout_keep_alive``: an answered connection with nothing
    since closes) is kept the same way: uvicorn sets a timer on each answer and cancels it when
    data comes (``_unset_keepalive_if_required``); here the answer notes when the idle
    connection is due to close (``_await_next_request``) and one timer, when it fires, closes
    it, waits on for a later answer, or stops while a request is under way."""

    timeout_headers = _timeout_headers()
    _head_timer: asyncio.TimerHandle | None = None
    _head_due = 0.0  # when the head awaited since the latest answer must be complete
    _idle_due: float | None = None  # when the connection, answered and idle, closes
    _idle_timer: asyncio.TimerHandle | None = None
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    timeout_keep_alive: float
    timeout_keep_alive_task: asyncio.TimerHandle | None
    timeout_keep_alive_handler: Callable[[], None]  # uvicorn's: closes the connection

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

    def _await_next_request(self) -> None:
        """Where uvicorn sets its keep-alive timer after an answer."""
        self._idle_due = self.loop.time() + self.timeout_keep_alive
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(self._idle_due, self._check_idle)

    def _unset_keepalive_if_required(self) -> None:
        # uvicorn calls it when data comes and when the connection is lost. Its own timer is
        # set only where its code is kept (httptools' pipelined request).
        self._idle_due = None
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def _check_idle(self) -> None:
        self._idle_timer = None
        due = self._idle_due
        if due is None or self.transport.is_closing():
            return  # data came since the answer: uvicorn's timer would be cancelled
        if due > self.loop.time():  # answered again since the timer was set
            self._idle_timer = self.loop.call_at(due, self._check_idle)
        else:
            self.timeout_keep_alive_handler()

    def _await_head(self) -> None:
        self._head_due = self.loop.time() + self.timeout_headers
        if self._head_timer is None:
            self._head_timer = self.loop.call_at(self._head_due, self._check_head)

    def _check_head(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._answering():
            return  # closed, or a request is being answered: its answer waits again
        if self._head_due > self.loop.time():
            self._head_timer = self.loop.call_at(self._head_due, self._check_head)
        else:  # no answer since the head was due, none under way: the head never came
            self.transport.close()

    def _answering(self) -> bool:
        """Whether a whole head has come and its request is not yet answered."""
        raise NotImplementedError


def _making(method: Callable[..., Any], cycle: type) -> Callable[..., Any]:
    """A method of uvicorn's protocol that makes a ``cycle`` where uvicorn's makes its own
    ``RequestResponseCycle`` (its module's global): the same code, other globals. Changing a
    made cycle's class instead cost more than it saved: Python 3.11's attribute caches for
    the object, in uvicorn's code and here, no longer held."""
    names = {**method.__globals__, "RequestResponseCycle": cycle}
    return types.FunctionType(
        method.__code__, names, method.__name__, method.__defaults__, method.__closure__
    )


class SeenValid:
    """Header names or values (bytes) a check passed, so that one seen before is not checked
    again. Bounded: a full set starts again, so fields that change (a date, an id) keep their
    check and the usual ones stay cheap."""

    __slots__ = ("seen",)
    LIMIT = 1024
    SIZE = 256  # longer values are checked each time

    def __init__(self) -> None:
        self.seen: set[bytes] = set()

    def add(self, field: bytes) -> None:
        if len(field) <= self.SIZE:
            if len(self.seen) >= self.LIMIT:
                self.seen.clear()
            self.seen.add(field)


_h11_names = SeenValid()
_h11_values = SeenValid()


def _h11_checked(headers: list[Any]) -> bool:
    """Whether h11 would accept every pair as it is (bytes, a token name, a field value):
    then ``h11.Response`` may skip its checks (``_parsed``)."""
    names, values = _h11_names.seen, _h11_values.seen
    try:
        for name, value in headers:
            if name not in names:
                if type(name) is not bytes or not _field_name_re.fullmatch(name):
                    return False
                _h11_names.add(name)
            if value not in values:
                if type(value) is not bytes:
                    return False
                if not value.isalnum():  # letters and digits (ids) pass: not remembered
                    if not _field_value_re.fullmatch(value):
                        return False
                    _h11_values.add(value)
    except (TypeError, ValueError):  # not pairs, or unhashable: h11 says what is wrong
        return False
    return True


class GuardedH11Cycle(h11_impl.RequestResponseCycle):
    """uvicorn's h11 request cycle, whose answer head skips h11's checks when every field
    passed them before (``_h11_checked``); any other head is uvicorn's own, errors included.
    A head whose body follows at once (``BODY_FOLLOWS``) is written with it."""

    _held: bytes | None = None  # the head, until its body comes

    def send(self, message: Any) -> Coroutine[Any, Any, None]:  # type: ignore[override]
        # Not a coroutine function: it hands back uvicorn's coroutine, or SENT once the head
        # is written, so that no answer's send costs two coroutines.
        if self._held is not None:
            return self._send_with_head(message)
        if (
            self.response_started
            or self.disconnected
            or self.flow.write_paused
            or self.access_log
            or message["type"] != "http.response.start"
            or type(message["status"]) is not int
        ):
            return _h11_send(self, message)
        headers = self.default_headers + list(message.get("headers", []))
        if CLOSE_HEADER in self.scope["headers"] and CLOSE_HEADER not in headers:
            headers.append(CLOSE_HEADER)  # a list of its own, made above
        if not _h11_checked(headers):
            return _h11_send(self, message)
        # From here, uvicorn's start of an answer.
        self.response_started = True
        self.waiting_for_100_continue = False
        status = message["status"]
        reason = h11_impl.STATUS_PHRASES[status]
        response = h11.Response(status_code=status, headers=headers, reason=reason, _parsed=True)
        head = self.conn.send(event=response)
        if message.get(BODY_FOLLOWS):
            self._held = head
        else:
            self.transport.write(head)
        return SENT

    def _send_with_head(self, message: Any) -> Coroutine[Any, Any, None]:
        """The held head and this message's body in one write, as uvicorn would send the
        body (h11 frames it); any other message after the head, uvicorn's way."""
        head, self._held = self._held, None
        if (
            self.disconnected
            or self.flow.write_paused
            or message["type"] != "http.response.body"
            or message.get("more_body", False)
        ):
            self.transport.write(head)
            return _h11_send(self, message)
        body = b"" if self.scope["method"] == "HEAD" else message.get("body", b"")
        data = b""
        try:
            data = self.conn.send(event=h11.Data(data=body))
            self.response_complete = True
            self.message_event.set()
            end = self.conn.send(event=h11.EndOfMessage())
        except BaseException:  # a body longer or shorter than its length: as uvicorn fails
            self.transport.write(head + data)
            raise
        self.transport.write(head + data + end)
        if self.conn.our_state is h11.MUST_CLOSE or not self.keep_alive:
            self.conn.send(event=h11.ConnectionClosed())
            self.transport.close()
        self.on_response()
        return SENT


_h11_send = h11_impl.RequestResponseCycle.send


class GuardedH11Protocol(HeadTimer, H11Protocol):
    handle_events = _making(H11Protocol.handle_events, GuardedH11Cycle)

    def on_response_complete(self) -> None:
        # uvicorn's, its keep-alive timer set lazily (HeadTimer).
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        self._await_next_request()
        self.flow.resume_reading()
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self.handle_events()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._await_head()

    def _answering(self) -> bool:
        # h11 stays IDLE until a whole head has come: past IDLE, a request is being answered.
        return self.conn.their_state is not h11.IDLE


HTTPTOOLS = importlib.util.find_spec("httptools") is not None
"""Whether httptools is installed (it has no wheel for some platforms, such as Pyodide)."""

if HTTPTOOLS:
    import httptools
    from uvicorn.protocols.http import httptools_impl
    from uvicorn.protocols.http.httptools_impl import (
        HEADER_RE,
        HEADER_VALUE_RE,
        STATUS_LINE,
        HttpToolsProtocol,
    )

    _names: dict[bytes, bytes] = {}  # a name uvicorn accepts, and its lower case
    _NAMES_MAX = 1024
    _values = SeenValid()
    _FRAMING = frozenset([b"content-length", b"transfer-encoding", b"connection"])

    class GuardedHttpToolsCycle(httptools_impl.RequestResponseCycle):
        """uvicorn's httptools request cycle, whose answer head checks only the names and
        values it has not seen valid before (uvicorn's checks, ``HEADER_RE`` and
        ``HEADER_VALUE_RE``); a head with an invalid field is uvicorn's own, errors
        included."""

        _held: bytes | None = None  # the head, until its body comes (BODY_FOLLOWS)

        def send(self, message: Any) -> Coroutine[Any, Any, None]:  # type: ignore[override]
            # As GuardedH11Cycle's: uvicorn's coroutine, or SENT once the head is written.
            if self._held is not None:
                return self._send_with_head(message)
            if (
                self.response_started
                or self.disconnected
                or self.flow.write_paused
                or self.access_log
                or message["type"] != "http.response.start"
            ):
                return _httptools_send(self, message)
            # The server's own fields, checked once per list (framing or invalid: uvicorn's).
            defaults = _default_lines(self.default_headers)
            if defaults is None:
                return _httptools_send(self, message)
            headers = list(message.get("headers", []))
            values = _values.seen
            content = [defaults]
            framing = None
            try:
                for name, value in headers:
                    try:  # a subscript, not get(): no method call for a name seen before
                        lowered = _names[name]
                    except KeyError:
                        if HEADER_RE.search(name):
                            return _httptools_send(self, message)
                        lowered = name.lower()
                        if len(_names) < _NAMES_MAX:
                            _names[name] = lowered
                    # Letters and digits only (an id, a length) pass, not remembered: a value
                    # new in each answer (x-correlation-id) would cost a search and churn the set.
                    if value not in values and not (type(value) is bytes and value.isalnum()):
                        if HEADER_VALUE_RE.search(value):
                            return _httptools_send(self, message)
                        _values.add(value)
                    if lowered in _FRAMING:
                        framing = [] if framing is None else framing
                        framing.append((lowered, value))
                    content += (lowered, b": ", value, b"\r\n")  # no method call
            except (TypeError, ValueError):  # not pairs, not bytes: uvicorn says what
                return _httptools_send(self, message)
            # From here, uvicorn's start of an answer, the headers checked above.
            self.response_started = True
            self.waiting_for_100_continue = False
            status_code = message["status"]
            content.insert(0, STATUS_LINE[status_code])
            has_connection_close = False
            for name, value in framing or ():
                if name == b"content-length" and self.chunked_encoding is None:
                    self.expected_content_length = int(value.decode())
                    self.chunked_encoding = False
                elif name == b"transfer-encoding" and value.lower() == b"chunked":
                    self.expected_content_length = 0
                    self.chunked_encoding = True
                elif name == b"connection":
                    connection = [token.lower().strip() for token in value.split(b",")]
                    if b"close" in connection:
                        self.keep_alive = False
                        has_connection_close = True
            if not self.keep_alive and not has_connection_close:
                content.append(b"connection: close\r\n")
            if (
                self.chunked_encoding is None
                and self.scope["method"] != "HEAD"
                and status_code not in (204, 304)
            ):
                self.chunked_encoding = True
                content.append(b"transfer-encoding: chunked\r\n")
            content.append(b"\r\n")
            if message.get(BODY_FOLLOWS) and not self.chunked_encoding:
                self._held = b"".join(content)
            else:
                self.transport.write(b"".join(content))
            return SENT

        def _send_with_head(self, message: Any) -> Coroutine[Any, Any, None]:
            """The held head and this message's body in one write, as uvicorn would send the
            body; any other message after the head, or a body not of its length, uvicorn's
            way (its errors)."""
            head, self._held = self._held, None
            body = message.get("body", b"")
            bodiless = self.scope["method"] == "HEAD"  # uvicorn sends none
            if (
                self.disconnected
                or self.flow.write_paused
                or message["type"] != "http.response.body"
                or message.get("more_body", False)
                or (len(body) != self.expected_content_length and not bodiless)
            ):
                self.transport.write(head)
                return _httptools_send(self, message)
            self.expected_content_length = 0
            self.transport.write(head if bodiless else head + body)
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()
            return SENT

        def send_whole(
            self,
            status: int,
            fields: list[tuple[bytes, bytes]],
            lines: tuple[bytes, ...],
            body: bytes,
        ) -> bool:
            """Send a whole answer in one write, without its ASGI events; False (nothing sent)
            where uvicorn's own steps are needed: the caller then sends the events. ``lines``:
            more fields, written out (``name: value\\r\\n``, in parts), after ``fields``.

            The caller vouches for both, as ``valor.passthrough`` checks them: names in lower
            case and values uvicorn accepts, a ``content-length`` of ``body``'s length (none
            for 204 and 304) and no other framing field."""
            if self.response_started or self.disconnected or self.flow.write_paused:
                return False
            if self.access_log:  # uvicorn's line is written by its own send
                return False
            defaults = _default_lines(self.default_headers)
            if defaults is None:
                return False
            content = [STATUS_LINE[status], defaults]
            for name, value in fields:
                content += (name, b": ", value, b"\r\n")
            content += lines
            if not self.keep_alive:
                content.append(b"connection: close\r\n")
            content.append(b"\r\n")
            if self.scope["method"] != "HEAD":
                content.append(body)
            self.response_started = self.response_complete = True
            self.waiting_for_100_continue = False
            self.transport.write(b"".join(content))
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()
            return True

    WHOLE_ANSWERS.add(GuardedHttpToolsCycle)
    _httptools_send = httptools_impl.RequestResponseCycle.send
    # The server's default fields (Date, Server, --header's), a new list each second: the
    # latest list's lines, made once, or None where uvicorn's own steps are needed.
    _defaults: tuple[list[tuple[bytes, bytes]], bytes | None] = ([], b"")

    def _default_lines(fields: list[tuple[bytes, bytes]]) -> bytes | None:
        global _defaults
        if fields is not _defaults[0]:
            lines: list[bytes] = []
            for name, value in fields:
                lowered = name.lower()
                if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value) or lowered in _FRAMING:
                    _defaults = (fields, None)
                    return None
                lines += (lowered, b": ", value, b"\r\n")
            _defaults = (fields, b"".join(lines))
        return _defaults[1]

    class _Raising:
        """A parser that raises what the connection's parser raised, for uvicorn to handle."""

        def __init__(self, exc: Exception) -> None:
            self.exc = exc

        def feed_data(self, data: bytes) -> None:
            raise self.exc

    class GuardedHttpToolsProtocol(HeadTimer, HttpToolsProtocol):
        on_headers_complete = _making(HttpToolsProtocol.on_headers_complete, GuardedHttpToolsCycle)
        max_head_size = MAX_HEAD_SIZE
        # Cheap per request: no parser callback is wrapped.
        _head_scope: object = None  # the request whose head bytes _head_size counts
        _head_size = 0
        _task: asyncio.Task[None] | None = None  # the latest request's, while in tasks

        def data_received(self, data: bytes) -> None:
            # uvicorn's, with _unset_keepalive_if_required's steps inline (two calls less per
            # request); a parser's error or upgrade is uvicorn's own to handle.
            self._idle_due = None
            if self.timeout_keep_alive_task is not None:
                self.timeout_keep_alive_task.cancel()
                self.timeout_keep_alive_task = None
            try:
                self.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                self._parser_stopped(exc)
            # uvicorn makes a request's scope when its head begins and its cycle, holding that
            # scope, when the head ends: a scope without its cycle is a head still coming.
            scope = self.scope
            if scope is not None and (self.cycle is None or self.cycle.scope is not scope):
                if scope is not self._head_scope:
                    self._head_scope, self._head_size = scope, 0
                # Everything fed since the head began is head, bar a pipelined request's tail.
                self._head_size += len(data)
                if self._head_size > self.max_head_size and not self.transport.is_closing():
                    self._refuse_large_head()

        def _parser_stopped(self, exc: Exception) -> None:
            """uvicorn's data_received for a parser that raised ``exc``: the same steps."""
            parser, self.parser = self.parser, _Raising(exc)  # type: ignore[assignment]
            try:
                HttpToolsProtocol.data_received(self, b"")
            finally:
                if type(self.parser) is _Raising:
                    self.parser = parser

        def _start_asgi_task(self, cycle: Any, app: Any) -> None:
            # uvicorn's, the task kept in the server's set (which shutdown waits on) without a
            # done callback per request (its call, a loop callback when the task ends, and
            # its discard): the connection holds its latest task and drops it from the set
            # once done, at its next request or when it closes.
            if self.config.reset_contextvars or self.limit_concurrency is not None:
                HttpToolsProtocol._start_asgi_task(self, cycle, app)  # counts tasks: exact
                return
            task = self.loop.create_task(cycle.run_asgi(app))
            self.tasks.add(task)
            self._drop_task()
            self._task = task

        def _drop_task(self) -> None:
            """Drop the connection's latest task from the server's set, now if done."""
            task = self._task
            if task is not None:
                self._task = None
                if task.done():
                    self.tasks.discard(task)
                else:  # a pipelined request's, started by the answer before it
                    task.add_done_callback(self.tasks.discard)

        def connection_lost(self, exc: Exception | None) -> None:
            self._drop_task()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            if self.pipeline or self.transport.is_closing():
                HttpToolsProtocol.on_response_complete(self)
            else:
                # uvicorn's steps without a pipelined request, its timer set lazily: those of
                # _unset_keepalive_if_required, _await_next_request and _await_head, inline
                # (three calls less per request). The answered cycle is still self.cycle.
                self.server_state.total_requests += 1
                if self.timeout_keep_alive_task is not None:
                    self.timeout_keep_alive_task.cancel()
                    self.timeout_keep_alive_task = None
                self.flow.resume_reading()
                loop = self.loop
                now = loop.time()
                self._idle_due = now + self.timeout_keep_alive
                if self._idle_timer is None:
                    self._idle_timer = loop.call_at(self._idle_due, self._check_idle)
                self._head_due = now + self.timeout_headers
                if self._head_timer is None:
                    self._head_timer = loop.call_at(self._head_due, self._check_head)
                return
            # A pipelined request whose head has come already is now self.cycle, unanswered.
            if self.cycle.response_complete and not self.transport.is_closing():
                self._await_head()

        def _answering(self) -> bool:
            return not (self.cycle is None or self.cycle.response_complete)

        def _refuse_large_head(self) -> None:
            answer = error_message(
                431, f"the request head is larger than the limit of {self.max_head_size} bytes"
            )
            head = [STATUS_LINE[431]]
            for name, value in (*answer["headers"], ["connection", "close"]):
                head.append(f"{name}: {value}\r\n".encode())
            head.append(b"content-length: %d\r\n\r\n" % len(answer["body"]))
            self.transport.write(b"".join(head) + answer["body"])
            self.transport.close()
