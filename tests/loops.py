"""Event loops that behave as a busy browser worker's does, for tests on CPython."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class NoPastLoop(asyncio.SelectorEventLoop):
    """Schedules as Pyodide's event loop does: ``call_at`` reads the clock again and calls
    ``call_later``, which refuses a negative delay (``ValueError``)."""

    def call_later(self, delay, callback, *args, context=None):  # type: ignore[no-untyped-def]
        if delay < 0:
            raise ValueError("Can't schedule in the past")
        return super().call_at(self.time() + delay, callback, *args, context=context)

    def call_at(self, when, callback, *args, context=None):  # type: ignore[no-untyped-def]
        return self.call_later(when - self.time(), callback, *args, context=context)


def busy_clock(step: float = 0.02) -> Callable[[], float]:
    """A monotonic clock that moves ``step`` seconds further on at every reading: a busy
    device, on which time passes between computing a due time and scheduling it."""
    readings = 0

    def read() -> float:
        nonlocal readings
        readings += 1
        return time.monotonic() + step * readings

    return read
