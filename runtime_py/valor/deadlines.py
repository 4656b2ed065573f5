"""Per-request time limits that cost next to nothing on the fast path.

``asyncio.timeout`` schedules a timer for every request; a runtime answering thousands of
requests a second mostly finishes them long before any limit. ``Deadlines`` keeps one timer
for all of them, which wakes every ``tick`` seconds while requests are in flight and cancels
those past their deadline, so a limit fires at most ``tick`` late.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Deadlines:
    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._pending: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._timer: asyncio.TimerHandle | None = None

    def limit(self, seconds: float) -> _Limit:
        """``async with deadlines.limit(s)``: ``TimeoutError`` if the block runs past ``s``."""
        return _Limit(self, seconds)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._pending.items()):
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = loop.call_later(self.tick, self._check, loop) if self._pending else None


class _Limit:
    __slots__ = ("deadlines", "seconds", "task")

    def __init__(self, deadlines: Deadlines, seconds: float) -> None:
        self.deadlines = deadlines
        self.seconds = seconds

    async def __aenter__(self) -> None:
        deadlines = self.deadlines
        task = self.task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        deadlines._pending[task] = loop.time() + self.seconds
        if deadlines._timer is None:
            deadlines._timer = loop.call_later(deadlines.tick, deadlines._check, loop)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        deadlines, task = self.deadlines, self.task
        del deadlines._pending[task]
        if task in deadlines._expired:
            deadlines._expired.discard(task)
            # The block may end on its own after the cancel was sent (it swallowed it).
            if task.uncancel() == 0 and kind is asyncio.CancelledError:
                raise TimeoutError from None
