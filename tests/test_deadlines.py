"""``Deadlines``: one timer cancels every task past its limit, and tells such a cancel apart
from any other."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.loops import NoPastLoop, busy_clock
from valor.deadlines import Deadlines

pytestmark = pytest.mark.anyio

TICK = 0.01


async def limited(deadlines: Deadlines, seconds: float, work: float) -> str:
    task = deadlines.start(seconds)
    try:
        await asyncio.sleep(work)
    except asyncio.CancelledError:
        if deadlines.stop(task):
            return "timed out"
        raise
    deadlines.stop(task)
    return "done"


async def test_work_within_its_limit_is_left_alone() -> None:
    deadlines = Deadlines(TICK)
    assert await limited(deadlines, 1.0, 0.03) == "done"


# An upper bound on wall time that a busy machine still meets, far below the 10 s that the
# work (or a timer left at a longer deadline) would take without the deadline firing.
PROMPTLY = 1.0


async def test_work_past_its_limit_is_cancelled_at_its_deadline() -> None:
    deadlines = Deadlines(TICK)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await limited(deadlines, 0.05, 10) == "timed out"
    assert 0.05 <= loop.time() - started < PROMPTLY


async def test_each_task_keeps_its_own_limit() -> None:
    deadlines = Deadlines(TICK)
    results = await asyncio.gather(
        limited(deadlines, 0.03, 10), limited(deadlines, 1.0, 0.1), limited(deadlines, 1.0, 0)
    )
    assert results == ["timed out", "done", "done"]


async def test_the_timer_stops_when_nothing_is_in_flight() -> None:
    deadlines = Deadlines(TICK)
    await limited(deadlines, 0.05, 0)
    assert deadlines._timer is not None  # set for the request's deadline, runs then
    await asyncio.sleep(0.05 + 3 * TICK)
    assert deadlines._timer is None


async def test_a_shorter_limit_than_those_in_flight_fires_in_time() -> None:
    deadlines = Deadlines(TICK)
    loop = asyncio.get_running_loop()
    longer = asyncio.ensure_future(limited(deadlines, 10, 0.3))
    await asyncio.sleep(0)  # the timer is set for its deadline first
    started = loop.time()
    assert await limited(deadlines, 0.05, 10) == "timed out"
    assert 0.05 <= loop.time() - started < PROMPTLY
    assert await longer == "done"


async def test_a_cancel_from_elsewhere_is_not_a_timeout() -> None:
    deadlines = Deadlines(TICK)
    task = asyncio.create_task(limited(deadlines, 10, 10))
    await asyncio.sleep(TICK)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_task_that_swallows_the_cancel_is_uncancelled() -> None:
    deadlines = Deadlines(TICK)

    async def stubborn() -> int:
        task = deadlines.start(0.02)
        with contextlib.suppress(asyncio.CancelledError):  # and finishes anyway
            await asyncio.sleep(10)
        assert deadlines.stop(task)
        return asyncio.current_task().cancelling()  # type: ignore[union-attr]

    assert await stubborn() == 0


async def test_a_task_that_catches_its_cancellation_is_cancelled_again() -> None:
    deadlines = Deadlines(TICK)
    task = deadlines.start(0.02)
    caught = 0
    try:
        for _ in range(3):
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                caught += 1
    finally:
        assert deadlines.stop(task)  # only the deadline's cancellations were pending
    assert caught == 3


async def test_code_holding_the_loop_past_its_deadline_is_interrupted() -> None:
    import time

    from valor.deadlines import DeadlineExceeded

    deadlines = Deadlines(TICK)
    task = deadlines.start(0.05)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        try:
            while time.monotonic() - started < 5:  # never awaits: the timer cannot run
                pass
        finally:
            deadlines.stop(task)
    assert time.monotonic() - started < 1


async def test_other_tasks_holding_the_loop_are_not_interrupted() -> None:
    import time

    deadlines = Deadlines(TICK)

    async def expired() -> None:
        deadlines.start(0.01)
        await asyncio.Event().wait()

    waiting = asyncio.ensure_future(expired())
    await asyncio.sleep(0)
    started = time.monotonic()
    while time.monotonic() - started < 0.3:  # this task has no deadline: left alone
        pass
    await asyncio.sleep(0)
    waiting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await waiting


def test_a_clock_that_moves_on_while_the_timer_runs_never_schedules_it_in_the_past(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A busy browser worker: 20 ms pass between any two readings of the clock. When the timer
    # ran, a deadline in flight could pass before the next timer was set; its delay came out
    # negative, Pyodide refused it, and no deadline was enforced from then on (a plug-in that
    # hung got the service worker's 504 after 35 s instead of its own after 2 s).
    import valor.deadlines

    monkeypatch.setattr(valor.deadlines, "monotonic", busy_clock(0.02))
    loop = NoPastLoop()
    problems: list[object] = []
    loop.set_exception_handler(lambda loop, context: problems.append(context.get("exception")))
    deadlines = Deadlines(TICK)

    async def both() -> list[str]:
        together = asyncio.gather(limited(deadlines, 0.05, 10), limited(deadlines, 0.1, 10))
        return await asyncio.wait_for(together, 2)

    try:
        assert loop.run_until_complete(both()) == ["timed out", "timed out"]
    finally:
        loop.close()
    assert problems == []


async def test_the_task_is_this_threads_while_another_loop_runs_one() -> None:
    """``start`` finds the running task without ``get_running_loop()`` when one loop runs a
    task; with another thread's loop in the middle of one, it still gives this thread's."""
    import threading

    inside, release = threading.Event(), threading.Event()

    async def held() -> None:
        inside.set()
        release.wait(5)  # holds its loop, its task entered, until this thread has looked

    thread = threading.Thread(target=asyncio.run, args=(held(),))
    thread.start()
    try:
        assert inside.wait(5)
        await asyncio.sleep(0)  # this task's next step: its entry now after the other's
        deadlines = Deadlines(TICK)
        task = deadlines.start(1.0)
        deadlines.stop(task)
        assert task is asyncio.current_task()
    finally:
        release.set()
        thread.join(5)
    assert deadlines.start(1.0) is asyncio.current_task()  # alone again
    deadlines.stop(asyncio.current_task())  # type: ignore[arg-type]
