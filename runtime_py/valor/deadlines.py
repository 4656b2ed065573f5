"""Per-request time limits that cost next to nothing on the fast path.

``asyncio.timeout`` schedules a timer for every request; a runtime answering thousands of
requests a second mostly finishes them long before any limit. ``Deadlines`` keeps one timer
for all of them, due at the earliest deadline in flight: it cancels the tasks past theirs and
sets itself for the next one, so a busy runtime's timer rarely runs at all.

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

A task past its deadline is cancelled again every ``tick`` seconds, so code that catches one
cancellation and awaits something else is cancelled again. Code that holds the event loop
itself (a loop on the CPU, a blocking call in an ``async`` handler) never lets the timer run:
a watchdog thread notices the timer is late and signals the loop's thread, whose handler raises
``DeadlineExceeded`` inside that code, the way a timeout interrupts a blocked call.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import weakref
from asyncio import get_running_loop
from time import monotonic

WATCHDOG_SIGNAL = getattr(signal, "SIGUSR2", None)
WATCH_INTERVAL = 0.2
# The running task: asyncio.current_task() is a Python function before 3.12 (C after) that
# reads this dict, keyed by the running loop; read here, a frame less per request.
_current_tasks = None if sys.version_info >= (3, 12) else asyncio.tasks._current_tasks  # type: ignore[attr-defined]


class DeadlineExceeded(BaseException):
    """Raised inside code that held the event loop past its task's deadline. A
    ``BaseException``, like ``CancelledError``, so ``except Exception`` does not swallow it."""


class Deadlines:
    def __init__(self, tick: float = 0.05) -> None:
        self.tick = tick
        self._pending: dict[asyncio.Task[object], float] = {}
        self._expired: dict[asyncio.Task[object], int] = {}  # how often each was cancelled
        self._timer: asyncio.TimerHandle | None = None
        self._due = monotonic()  # when the timer is set to run: late means the loop is held
        self._watched: bool | None = None  # by the watchdog; None: not asked yet

    def start(
        self, seconds: float, task: asyncio.Task[object] | None = None
    ) -> asyncio.Task[object]:
        """Give ``task`` (by default the current one) ``seconds`` to finish; returns it, for
        ``stop``."""
        if task is None:
            if _current_tasks is None:
                task = asyncio.current_task()
            elif len(_current_tasks) == 1:
                # Every loop running a task has its entry there, this thread's too: the only
                # one (a server worker's one loop) is this task, found without
                # get_running_loop(), a getpid() system call per request on 3.11. Another
                # thread's loop may add an entry after the count: it comes after this one.
                for task in _current_tasks.values():  # noqa: B007  (the first)
                    break
            else:
                task = _current_tasks.get(get_running_loop())
            if task is None:
                raise RuntimeError("Deadlines.start() must be called from a task")
        deadline = self._pending[task] = monotonic() + seconds
        if self._timer is None:
            self._set_timer(deadline, seconds)
            if self._watched is None:
                self._watched = _watchdog.watch(self)
            if self._watched:
                _watchdog.arm()
                _watchdog.moved.set()
        elif deadline < self._due:  # a shorter limit than those in flight
            self._timer.cancel()
            self._set_timer(deadline, seconds)
            if self._watched:
                _watchdog.moved.set()
        return task

    def has(self, task: asyncio.Task[object]) -> bool:
        """Whether ``task`` has a deadline running (``start`` without ``stop`` yet)."""
        return task in self._pending

    def stop(self, task: asyncio.Task[object]) -> bool:
        """Forget ``task``'s deadline. True when the deadline passed and its cancellations are
        the only ones pending (the task's own ``CancelledError`` is then a timeout)."""
        del self._pending[task]
        if not self._expired:  # the usual case: no deadline has passed
            return False
        cancels = self._expired.pop(task, 0)
        if not cancels:
            return False
        remaining = task.cancelling()
        for _ in range(cancels):
            remaining = task.uncancel()
        return remaining == 0

    def _set_timer(self, due: float, delay: float) -> None:
        # The delay comes from the same clock reading as ``due``, never from a later one: by
        # then ``due`` may have passed, and Pyodide's event loop refuses a negative delay
        # (ValueError), which left no timer and every later deadline unenforced.
        self._due = due
        self._timer = asyncio.get_running_loop().call_later(delay, self._check)

    def _check(self) -> None:
        now = monotonic()
        due = None
        for task, deadline in list(self._pending.items()):
            if deadline <= now:
                self._expired[task] = self._expired.get(task, 0) + 1
                task.cancel()
                deadline = now + self.tick  # until it stops
            if due is None or deadline < due:
                due = deadline
        if due is not None:
            self._set_timer(due, due - now)
            return
        self._timer = None
        if self._watched:
            _watchdog.disarm()

    def late_at(self) -> float | None:
        """When the timer will be late, if it is set (read by the watchdog)."""
        return None if self._timer is None else self._due + 2 * self.tick

    def overdue(self, now: float) -> bool:
        """Whether the loop is held while a deadline passed (called from the watchdog)."""
        late = 2 * self.tick
        if now - self._due < late:
            return False  # the timer is not late: the loop is free and does the work
        try:
            return any(deadline + late <= now for deadline in list(self._pending.values()))
        except RuntimeError:  # the loop changed the dict while we read it
            return False

    def interrupt(self) -> None:
        """In the loop's thread: raise ``DeadlineExceeded`` if the running task is past its
        deadline."""
        try:
            task = asyncio.current_task()
        except RuntimeError:
            return
        deadline = self._pending.get(task) if task is not None else None
        if deadline is not None and deadline <= monotonic():
            raise DeadlineExceeded


class _Watchdog:
    """One thread for every ``Deadlines`` of the process: while any of their timers is armed
    (requests in flight) it looks whether the loop is held past a deadline, when a timer would
    be late and then each ``WATCH_INTERVAL`` while one is, and signals the main thread. Arming,
    disarming and moving a timer earlier happen in the main thread, only when a timer starts,
    stops or gets an earlier deadline, so a busy server pays nothing per request, and the
    thread wakes seldom: each wake-up takes the GIL from the loop."""

    def __init__(self) -> None:
        self.busy = threading.Event()
        self.moved = threading.Event()  # a timer was set earlier than the thread waits for
        self.armed = 0
        self._watched: weakref.WeakSet[Deadlines] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._usable: bool | None = None

    def watch(self, deadlines: Deadlines) -> bool:
        """Watch ``deadlines`` (whose loop runs in this thread), if this thread can be
        signalled; whether it is."""
        if not self._install():
            return False
        self._watched.add(deadlines)
        return True

    def arm(self) -> None:
        self.armed += 1
        if self.armed == 1:
            self.busy.set()

    def disarm(self) -> None:
        self.armed -= 1
        if self.armed == 0:
            self.busy.clear()

    def _install(self) -> bool:
        # Signal handlers run in the main thread only, which is where uvicorn runs the loop.
        # Pyodide has neither threads nor signals: the browser's worker has its own limits.
        if (
            WATCHDOG_SIGNAL is None
            or sys.platform == "emscripten"
            or threading.current_thread() is not threading.main_thread()
        ):
            return False
        if self._usable is None:
            current = signal.getsignal(WATCHDOG_SIGNAL)
            self._usable = current in (signal.SIG_DFL, None)  # else the application uses it
            if self._usable:
                signal.signal(WATCHDOG_SIGNAL, self._interrupt)
                self._thread = threading.Thread(
                    target=self._watch, args=(threading.main_thread().ident,), daemon=True
                )
                self._thread.start()
        return self._usable

    def _watch(self, loop_thread: int) -> None:
        assert WATCHDOG_SIGNAL is not None
        while True:
            self.busy.wait()
            self.moved.clear()  # before reading the timers: a later move wakes the wait below
            watched = list(self._watched)
            now = monotonic()
            if any(d.overdue(now) for d in watched):
                signal.pthread_kill(loop_thread, WATCHDOG_SIGNAL)
            # Until the first timer would be late; at most a few times a second, so a held
            # loop is interrupted at most this much later.
            late = [at for d in watched if (at := d.late_at()) is not None]
            self.moved.wait(max(min(late, default=now) - now, WATCH_INTERVAL))

    def _interrupt(self, signum: int, frame: object) -> None:
        # Runs in the main thread, between two bytecodes of whatever holds its loop.
        for deadlines in list(self._watched):
            deadlines.interrupt()


_watchdog = _Watchdog()
