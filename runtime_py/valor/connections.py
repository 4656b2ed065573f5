"""Limits on client connections for ``valor serve``: uvicorn's HTTP/1.1 protocol, plus a time
limit on reading a request's head.

uvicorn times out idle keep-alive connections, but not a connection that never finishes its
request line and headers, so a few hundred silent or trickling sockets would hold their file
descriptors for ever (slowloris). Here a connection that has not sent a whole request head
``timeout_headers`` seconds after it opened, or after its previous answer, is closed, as
nginx's ``client_header_timeout`` does.
"""

from __future__ import annotations

import asyncio
import os

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_TIMEOUT_HEADERS = 10.0


class GuardedH11Protocol(H11Protocol):
    # Set through the environment: uvicorn builds protocols in each worker process itself.
    timeout_headers = float(os.environ.get("VALOR_TIMEOUT_HEADERS") or DEFAULT_TIMEOUT_HEADERS)
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_timer is not None and self.conn.their_state is not h11.IDLE:
            self._head_timer.cancel()
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def _await_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.timeout_headers, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()
