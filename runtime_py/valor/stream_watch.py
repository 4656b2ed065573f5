"""A plug-in's streamed answer as the runtime hands it to a host: every part within the
plug-in's ``timeout``, under the runtime's deadlines, and a part it fails to produce a logged
``StreamError`` (``valor.failures``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

from .deadlines import DeadlineExceeded, Deadlines
from .failures import broken_error, idle_error
from .streaming import Stream


def watched(stream: Stream, plugin: str, idle: float, deadlines: Deadlines) -> Stream:
    """``stream`` as the runtime hands it to a host: a part that takes longer than ``idle``
    seconds, or a part the plug-in fails to produce, ends it with ``StreamError`` (logged once,
    under an error id). Closing it closes ``stream``.

    Each part is awaited under ``deadlines``, in the task that reads the stream, as a handler
    is: a generator that holds the event loop between parts is interrupted by the watchdog, one
    that awaits is cancelled. (``asyncio.wait_for`` would run the part in a task of its own on
    Python 3.11, whose cancellation it drops when the part is ready at the same moment.)"""
    return Stream(_watch(stream, plugin, idle, deadlines), stream.aclose)


async def _watch(
    stream: Stream, plugin: str, idle: float, deadlines: Deadlines
) -> AsyncIterator[bytes]:
    try:
        while True:
            try:
                part = await _within(stream.__anext__(), idle, deadlines)
            except StopAsyncIteration:
                return
            except (TimeoutError, DeadlineExceeded):
                raise idle_error(plugin, idle) from None
            except Exception as exc:
                raise broken_error(plugin, exc) from exc
            yield part
    finally:
        await stream.aclose()


async def _within(part: Awaitable[bytes], idle: float, deadlines: Deadlines) -> bytes:
    """``part`` within ``idle`` seconds (``TimeoutError`` past them), under ``deadlines`` in
    the current task. A task with a deadline of its own (a handler reading a sibling plug-in's
    stream) keeps it, and its watchdog: the part gets ``asyncio.timeout`` then."""
    task = asyncio.current_task()
    if task is None or deadlines.has(task):
        async with asyncio.timeout(idle):
            return await part
    deadlines.start(idle, task)
    try:
        result = await part
    except asyncio.CancelledError:
        if deadlines.stop(task):
            raise TimeoutError from None
        raise
    except BaseException:
        deadlines.stop(task)
        raise
    if deadlines.stop(task):  # it caught its cancellation and produced a part late
        raise TimeoutError
    return result
