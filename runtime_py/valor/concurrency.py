"""Running sync plug-in code without stalling the event loop, in either host."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable
from typing import Any

# Pyodide has no threads: sync code runs inline there; on the server it runs in a worker thread
# so one slow handler never stalls the others.
HAS_THREADS = sys.platform != "emscripten"


async def call(function: Callable[..., Any], *args: Any) -> Any:
    """Call a sync or async function and return its result."""
    if inspect.iscoroutinefunction(function):
        return await function(*args)
    if HAS_THREADS:
        result = await asyncio.to_thread(function, *args)
    else:
        result = function(*args)
    if inspect.isawaitable(result):
        result = await result
    return result
