"""Running sync plug-in code without stalling the event loop, in either host."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Pyodide has no threads: sync code runs inline there; on the server it runs in a worker thread
# so one slow handler never stalls the others.
HAS_THREADS = sys.platform != "emscripten"
DEFAULT_THREADS = 8


class PluginBusy(Exception):
    """Every worker thread of a plug-in is taken (the runtime answers 503)."""


class Threads:
    """A plug-in's own worker threads. A call past its timeout keeps its thread until the code
    returns (Python cannot stop a thread), so a plug-in stuck that way uses up its own
    ``size`` threads and then answers 503, while every other plug-in keeps its threads."""

    def __init__(self, name: str, size: int = DEFAULT_THREADS) -> None:
        self.name = name
        self.size = size
        self.busy = 0
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    async def run(self, function: Callable[..., Any], *args: Any) -> Any:
        """``function(*args)`` in one of the threads; ``PluginBusy`` when none is free."""
        with self._lock:
            if self.busy >= self.size:
                raise PluginBusy(
                    f"plug-in {self.name!r} is busy: all its {self.size} threads are taken"
                )
            self.busy += 1
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.size, thread_name_prefix=f"valor-{self.name}")
        context = contextvars.copy_context()
        try:
            future = self._executor.submit(self._call, context, function, args)
        except BaseException:
            self._release()
            raise
        return await asyncio.wrap_future(future)

    def _call(self, context: contextvars.Context, function: Callable[..., Any], args: Any) -> Any:
        try:
            return context.run(function, *args)
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            self.busy -= 1

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)


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
