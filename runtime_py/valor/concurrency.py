"""Running sync plug-in code without stalling the event loop, in either host."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any

# Pyodide has no threads: sync code runs inline there; on the server it runs in a worker thread
# so one slow handler never stalls the others.
HAS_THREADS = sys.platform != "emscripten"


def as_async(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``function`` as a coroutine function: async ones as they are, sync ones off the loop."""
    if inspect.iscoroutinefunction(function):
        return function

    async def call_sync(*args: Any) -> Any:
        if HAS_THREADS:
            result = await asyncio.to_thread(function, *args)
        else:
            result = function(*args)
        if inspect.isawaitable(result):
            result = await result
        return result

    return call_sync


async def call(function: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async function once and return its result."""
    return await as_async(function)(*args)
