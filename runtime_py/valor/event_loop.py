"""Timers already due run at once, on every event loop the runtime runs on.

CPython's event loop runs a timer whose delay is negative at once. Pyodide's ``WebLoop`` raises
``ValueError("Can't schedule in the past")`` instead, and ``asyncio.wait_for``,
``asyncio.timeout`` and ``loop.call_at`` all compute a due time, read the clock again and then
schedule: on a busy device the due time can pass in between. Plug-ins then failed to load, or
their own timeouts failed at random, only in the browser. The browser host mends the loop's
class once, at boot, for the runtime and every plug-in.
"""

from __future__ import annotations

import asyncio
from typing import Any

_MENDED = "_valor_runs_late_timers"


def run_late_timers_at_once(loop_class: type[asyncio.AbstractEventLoop]) -> None:
    """Make ``loop_class.call_later`` (which its ``call_at`` calls) take a negative delay as
    zero, as CPython does. Idempotent."""
    if getattr(loop_class, _MENDED, False):
        return
    call_later = loop_class.call_later

    def call_later_or_now(
        self: asyncio.AbstractEventLoop, delay: float, callback: Any, *args: Any, **kwargs: Any
    ) -> asyncio.TimerHandle:
        return call_later(self, max(delay, 0.0), callback, *args, **kwargs)

    loop_class.call_later = call_later_or_now  # type: ignore[method-assign]
    setattr(loop_class, _MENDED, True)
