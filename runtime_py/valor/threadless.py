"""Sync code that an app hands to a thread runs inline where there are no threads (Pyodide).

FastAPI and Starlette run a plain ``def`` endpoint, dependency or sync iterator through
anyio's ``to_thread.run_sync`` (Starlette's ``run_in_threadpool`` and ``iterate_in_threadpool``
call it, FastAPI's too). Pyodide cannot start a thread, so those calls fail there with
``RuntimeError: can't start new thread``. The browser host replaces anyio's ``run_sync`` once,
at boot, with one that calls the function at once: an unmodified app works, and a sync
endpoint holds the runtime while it runs, as it would hold its thread.
"""

from __future__ import annotations

import contextvars
import importlib.util
import sys
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def run_sync(func: Callable[..., T], *args: Any, **options: Any) -> T:
    """anyio's ``to_thread.run_sync``, without the thread: ``func(*args)`` in a copy of the
    caller's context (as in a worker thread, its context changes stay its own). ``options``
    (a limiter, cancellation) have nothing to bound here."""
    return contextvars.copy_context().run(func, *args)


def run_threads_inline() -> bool:
    """Make anyio's threads run inline, if anyio is installed; whether it is. Idempotent."""
    if "anyio.to_thread" not in sys.modules and importlib.util.find_spec("anyio") is None:
        return False
    import anyio.to_thread

    anyio.to_thread.run_sync = run_sync  # type: ignore[assignment]
    return True
