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
"""

from __future__ import annotations

import asyncio
import importlib.util
import os

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

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
    (callgrind), 4 % of its whole request. Each protocol says whether it is answering."""

    timeout_headers = _timeout_headers()
    _head_timer: asyncio.TimerHandle | None = None
    _head_due = 0.0  # when the head awaited since the latest answer must be complete
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)  # type: ignore[misc]

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


class GuardedH11Protocol(HeadTimer, H11Protocol):
    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._await_head()

    def _answering(self) -> bool:
        # h11 stays IDLE until a whole head has come: past IDLE, a request is being answered.
        return self.conn.their_state is not h11.IDLE


HTTPTOOLS = importlib.util.find_spec("httptools") is not None
"""Whether httptools is installed (it has no wheel for some platforms, such as Pyodide)."""

if HTTPTOOLS:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

    class GuardedHttpToolsProtocol(HeadTimer, HttpToolsProtocol):
        max_head_size = MAX_HEAD_SIZE
        # Cheap per request: no parser callback is wrapped.
        _head_scope: object = None  # the request whose head bytes _head_size counts
        _head_size = 0

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
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

        def on_response_complete(self) -> None:
            super().on_response_complete()
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
