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

A task past its deadline is cancelled again on every tick, so code that catches one
cancellation and awaits something else is cancelled again. Code that holds the event loop
itself (a loop on the CPU, a blocking call in an ``async`` handler) never lets the timer run:
a watchdog thread notices the timer is late and signals the loop's thread, whose handler raises
``DeadlineExceeded`` inside that code, the way a timeout interrupts a blocked call.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from time import monotonic

WATCHDOG_SIGNAL = getattr(signal, "SIGUSR2", None)


class DeadlineExceeded(BaseException):
    """Raised inside code that held the event loop past its task's deadline. A
    ``BaseException``, like ``CancelledError``, so ``except Exception`` does not swallow it."""


class Deadlines:
    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._pending: dict[asyncio.Task[object], float] = {}
        self._expired: dict[asyncio.Task[object], int] = {}  # how often each was cancelled
        self._timer: asyncio.TimerHandle | None = None
        self._beat = monotonic()  # when the timer last ran: late means the loop is held
        self._busy = threading.Event()  # requests in flight: the watchdog watches
        self._watchdog: threading.Thread | None = None

    def start(self, seconds: float) -> asyncio.Task[object]:
        """Give the current task ``seconds`` to finish; returns it, for ``stop``."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.start() must be called from a task")
        self._pending[task] = monotonic() + seconds
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.tick, self._check)
            self._beat = monotonic()
            self._busy.set()
            if self._watchdog is None:
                self._start_watchdog()
        return task

    def stop(self, task: asyncio.Task[object]) -> bool:
        """Forget ``task``'s deadline. True when the deadline passed and its cancellations are
        the only ones pending (the task's own ``CancelledError`` is then a timeout)."""
        del self._pending[task]
        cancels = self._expired.pop(task, 0)
        if not cancels:
            return False
        remaining = task.cancelling()
        for _ in range(cancels):
            remaining = task.uncancel()
        return remaining == 0

    def _check(self) -> None:
        now = self._beat = monotonic()
        for task, deadline in list(self._pending.items()):
            if deadline <= now:
                self._expired[task] = self._expired.get(task, 0) + 1
                task.cancel()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.tick, self._check) if self._pending else None
        if self._timer is None:
            self._busy.clear()

    # -- the watchdog -----------------------------------------------------------------------

    def _start_watchdog(self) -> None:
        # Signal handlers run in the main thread only, which is where uvicorn runs the loop.
        if WATCHDOG_SIGNAL is None or threading.current_thread() is not threading.main_thread():
            self._watchdog = threading.current_thread()  # none, and do not try again
            return
        if signal.getsignal(WATCHDOG_SIGNAL) not in (signal.SIG_DFL, None):
            self._watchdog = threading.current_thread()  # the application uses the signal
            return
        signal.signal(WATCHDOG_SIGNAL, self._interrupt)
        self._watchdog = threading.Thread(
            target=self._watch, args=(threading.main_thread().ident,), daemon=True
        )
        self._watchdog.start()

    def _watch(self, loop_thread: int | None) -> None:
        assert WATCHDOG_SIGNAL is not None and loop_thread is not None
        late = 2 * self.tick
        while True:
            self._busy.wait()
            threading.Event().wait(self.tick)
            now = monotonic()
            if now - self._beat < late:
                continue  # the loop is free; the timer does the work
            try:
                overdue = any(deadline + late <= now for deadline in list(self._pending.values()))
            except RuntimeError:  # the loop changed the dict while we read it
                continue
            if overdue:
                signal.pthread_kill(loop_thread, WATCHDOG_SIGNAL)

    def _interrupt(self, signum: int, frame: object) -> None:
        # Runs in the loop's thread, between two bytecodes of whatever holds it.
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return
        deadline = self._pending.get(task) if task is not None else None
        if deadline is not None and deadline <= monotonic():
            raise DeadlineExceeded
