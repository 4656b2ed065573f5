"""The event loop as the runtime needs it on every host: timers already due run at once, and
tasks start at once where Python can (``started_task``).

CPython's event loop runs a timer whose delay is negative at once. Pyodide's ``WebLoop`` raises
``ValueError("Can't schedule in the past")`` instead, and ``asyncio.wait_for``,
``asyncio.timeout`` and ``loop.call_at`` all compute a due time, read the clock again and then
schedule: on a busy device the due time can pass in between. Plug-ins then failed to load, or
their own timeouts failed at random, only in the browser. The browser host mends the loop's
class once, at boot, for the runtime and every plug-in.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
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


EAGER = sys.version_info >= (3, 12)  # Task(eager_start=...)


def started_task(work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """A task for ``work``, run at once up to its first wait where Python can (3.12): work that
    finishes without waiting, as most plug-ins' answers do, then costs no turn of the loop."""
    loop = asyncio.get_running_loop()
    if EAGER:
        return asyncio.Task(work, loop=loop, eager_start=True)
    return loop.create_task(work)
