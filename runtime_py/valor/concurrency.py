"""Running sync plug-in code without stalling the event loop, in either host."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

# Pyodide has no threads: sync code runs inline there; on the server it runs in a worker thread
# so one slow handler never stalls the others.
HAS_THREADS = sys.platform != "emscripten"
DEFAULT_THREADS = 8


class PluginBusy(Exception):
    """Every worker thread of a plug-in is held by a call past its timeout (answered 503)."""


class Threads:
    """A plug-in's own worker threads. Calls wait for a free thread in turn (within their
    timeout). A call past its timeout keeps its thread until the code returns (Python cannot
    stop a thread); once all ``size`` threads are held that way the plug-in answers 503 at once,
    while every other plug-in keeps its own threads."""

    def __init__(self, name: str, size: int = DEFAULT_THREADS) -> None:
        self.name = name
        self.size = size
        self.abandoned = 0  # threads still running a call whose caller gave up
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in one of the threads; ``PluginBusy`` when all are stuck."""
        future = self.submit(function, *args)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            self.abandon(future)
            raise

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """Start ``function(*args)`` in one of the threads; ``PluginBusy`` when all are stuck.
        A caller that stops waiting for it calls ``abandon``."""
        if self.abandoned >= self.size:
            raise PluginBusy(
                f"plug-in {self.name!r} is busy: all its {self.size} threads are still running "
                "calls that timed out"
            )
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=f"valor-{self.name}")
        return self._executor.submit(contextvars.copy_context().run, function, *args)

    def abandon(self, future: Future[Any]) -> None:
        """Nobody waits for ``future`` any more: if it already runs, its thread counts as held
        until it returns."""
        if not future.cancel():
            with self._lock:
                self.abandoned += 1
            future.add_done_callback(self._release)

    def _release(self, future: object) -> None:
        with self._lock:
            self.abandoned -= 1

    def close(self) -> None:
        """Take no more calls. Calls already waiting for a thread still run and answer: the
        plug-in is being removed, not its callers (cancelling their futures dropped their
        requests); each is bounded by its timeout, as it was."""
        if self._executor is not None:
            self._executor.shutdown(wait=False)


def as_async(
    function: Callable[..., Any], threads: Threads | None = None
) -> Callable[..., Awaitable[Any]]:
    """``function`` as a coroutine function: async ones as they are, sync ones off the loop
    (in ``threads`` if given, else in asyncio's shared pool)."""
    if inspect.iscoroutinefunction(function):
        return function

    async def call_sync(*args: Any) -> Any:
        if not HAS_THREADS:
            result = function(*args)
        elif threads is not None:
            result = await threads.run(function, *args)
        else:
            result = await asyncio.to_thread(function, *args)
        if inspect.isawaitable(result):
            result = await result
        return result

    return call_sync


async def call(function: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async function once and return its result."""
    return await as_async(function)(*args)
