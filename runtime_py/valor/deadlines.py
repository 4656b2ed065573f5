"""Per-request time limits that cost next to nothing on the fast path.

``asyncio.timeout`` schedules a timer for every request; a runtime answering thousands of
requests a second mostly finishes them long before any limit. ``Deadlines`` keeps one timer
for all of them, which wakes every ``tick`` seconds while requests are in flight and cancels
those past their deadline, so a limit fires at most ``tick`` late.

It is two plain calls around the awaited work rather than a context manager: the async
context protocol alone cost more than the rest of the bookkeeping.

    task = deadlines.start(seconds)
    try:
        result = await work()
    except asyncio.CancelledError:
        if deadlines.stop(task):
            ...  # the deadline passed
        raise
    deadlines.stop(task)  # on every other way out too
"""

from __future__ import annotations

import asyncio
from time import monotonic


class Deadlines:
    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._pending: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, seconds: float) -> asyncio.Task[object]:
        """Give the current task ``seconds`` to finish; returns it, for ``stop``."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.start() must be called from a task")
        self._pending[task] = monotonic() + seconds
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._check)
        return task

    def stop(self, task: asyncio.Task[object]) -> bool:
        """Forget ``task``'s deadline. True when the deadline passed and its cancellation is
        the only one pending (the task's own ``CancelledError`` is then a timeout)."""
        del self._pending[task]
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    def _check(self) -> None:
        now = monotonic()
        for task, deadline in list(self._pending.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.tick, self._check) if self._pending else None
