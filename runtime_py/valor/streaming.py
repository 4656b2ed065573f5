"""Streamed answers: a body that arrives in parts, the same way in both hosts.

A plug-in streams by answering with an iterator (sync or async) of ``bytes`` or ``str``, an
ASGI app by sending ``more_body``, a worker-style plug-in by posting parts. Each becomes a
``Stream`` in the answer's ``body``. The runtime reads its first part under the plug-in's
``timeout``, then hands it on watched (``valor.stream_watch``): a part that takes longer than
that, or an error, ends the stream with ``StreamError``, logged under an error id. The host
sends parts as they come and closes the stream when it is done or the client goes away, which
closes the plug-in's generator.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from .concurrency import HAS_THREADS, Threads
from .wire import NO_BODY, WireError

log = logging.getLogger("valor")
_END = object()
# Sync generators run in threads on the server, so one that blocks between parts stalls
# neither the event loop nor other plug-ins: in their plug-in's own threads (``Stream.threads``,
# set by its loader), else in this pool.
_threads = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="valor-stream")


class StreamError(Exception):
    """A stream that ended before its last part; the message names why and the error id."""


class Stream:
    """A body in parts: ``async for part in stream``; ``aclose()`` stops the producer.

    ``start()`` reads the first part ahead, so a plug-in that never produces one is a timeout
    like any other, and an answer's head is only sent once its body is under way.
    """

    def __init__(
        self, parts: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._parts = parts
        self._on_close = on_close
        self._first: bytes | None = None
        self._ended = False
        self.closed = False
        self.threads: Threads | None = None  # where a sync generator's steps run

    async def start(self) -> None:
        try:
            self._first = await self._parts.__anext__()
        except StopAsyncIteration:
            self._ended = True

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            part, self._first = self._first, None
            return part
        if self._ended or self.closed:
            raise StopAsyncIteration
        try:
            return await self._parts.__anext__()
        except StopAsyncIteration:
            self._ended = True
            raise

    async def aclose(self) -> None:
        """Stop the producer (its generator's ``finally`` runs); safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        try:
            close = getattr(self._parts, "aclose", None)
            if close is not None:
                await close()
        finally:
            if self._on_close is not None:
                await self._on_close()

    def __repr__(self) -> str:
        return "Stream()"


def is_streamable(content: Any) -> bool:
    """Whether ``content`` is something to stream: an iterator or async iterable of parts."""
    return isinstance(content, (Iterator, AsyncIterable)) and not isinstance(
        content, (str, bytes, bytearray, memoryview)
    )


def stream_of(content: Iterator[Any] | AsyncIterable[Any]) -> Stream:
    """A ``Stream`` of an iterator or async iterable of ``bytes`` or ``str`` parts."""
    if isinstance(content, AsyncIterable):
        return Stream(_from_async(content))
    stream = Stream(_no_parts())
    stream._parts = _from_sync(content, stream)
    return stream


async def _no_parts() -> AsyncIterator[bytes]:
    return
    yield


async def _from_async(content: AsyncIterable[Any]) -> AsyncIterator[bytes]:
    iterator = content.__aiter__()
    try:
        while True:
            try:
                part = await iterator.__anext__()
            except StopAsyncIteration:
                return
            yield _bytes(part)
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:
            await close()


async def _from_sync(iterator: Iterator[Any], stream: Stream) -> AsyncIterator[bytes]:
    step: concurrent.futures.Future[Any] | None = None
    threads = stream.threads  # set by the plug-in's loader before the first step
    try:
        while True:
            if HAS_THREADS:
                if threads is not None:
                    step = threads.submit(next, iterator, _END)
                else:
                    step = _threads.submit(next, iterator, _END)
                part = await asyncio.wrap_future(step)
            else:  # Pyodide has no threads: the generator runs inline
                part = next(iterator, _END)
            if part is _END:
                return
            yield _bytes(part)
    finally:
        if step is not None and not step.done():
            # Still running in its thread: a generator cannot be closed until it yields.
            if threads is not None:
                threads.abandon(step)  # its thread stays the plug-in's until then
            step.add_done_callback(lambda _: _close_sync(iterator))
        else:
            _close_sync(iterator)


def _close_sync(iterator: Iterator[Any]) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            log.exception("closing a streamed generator failed")


def _bytes(part: Any) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode()
    if isinstance(part, (bytearray, memoryview)):
        return bytes(part)
    raise TypeError(f"a streamed part must be bytes or str, got {type(part).__name__}")


def streamed(answer: Any) -> Stream | None:
    """The ``Stream`` in a plug-in's answer, if it streams; its body is then left empty, so
    the rest of the answer is checked like any other."""
    if type(answer) is dict and isinstance(answer.get("body"), Stream):
        if answer.get("status") in NO_BODY:
            raise WireError(f"a {answer['status']} answer cannot have a body (a stream)")
        stream = answer["body"]
        answer["body"] = b""
        return stream
    return None


async def complete(answer: Any) -> Any:
    """``answer`` (a wire response) with a streamed body read to its end, for callers that
    want it whole (``valor call``, the test client). Raises ``StreamError`` if it fails."""
    body = answer["body"]
    if isinstance(body, Stream):
        try:
            answer["body"] = b"".join([part async for part in body])
        finally:
            await body.aclose()
    return answer
