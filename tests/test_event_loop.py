"""``run_late_timers_at_once``: on an event loop that refuses a timer due in the past (as
Pyodide's does), ``asyncio.wait_for``, ``asyncio.timeout`` and ``loop.call_at`` work on a
clock that moves on between reading it and scheduling."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.loops import NoPastLoop, busy_clock
from valor.event_loop import run_late_timers_at_once

# Each reading of the busy clock is 20 ms on; a 30 ms limit is due after the second reading and
# before the third, which is where asyncio schedules it: a negative delay, every time.
LIMIT = 0.03


class MendedLoop(NoPastLoop):
    """A class of its own, so mending it leaves ``NoPastLoop`` as it is for other tests."""


def run_on_busy_clock(loop_class: type[NoPastLoop], work: Callable[[], Coroutine]) -> Any:
    loop = loop_class()
    loop.time = busy_clock(0.02)  # type: ignore[method-assign]
    try:
        return loop.run_until_complete(asyncio.wait_for(work(), 5))
    finally:
        loop.close()


async def wait_for_times_out() -> str:
    try:
        await asyncio.wait_for(asyncio.sleep(60), LIMIT)
    except TimeoutError:
        return "timed out"
    return "finished"


async def timeout_times_out() -> str:
    try:
        async with asyncio.timeout(LIMIT):
            await asyncio.sleep(60)
    except TimeoutError:
        return "timed out"
    return "finished"


async def call_at_in_the_past_runs() -> str:
    loop = asyncio.get_running_loop()
    ran = loop.create_future()
    loop.call_at(loop.time() - 1, ran.set_result, "ran")
    return await ran


CASES = [wait_for_times_out, timeout_times_out, call_at_in_the_past_runs]


@pytest.mark.parametrize(
    "work",
    [
        pytest.param(
            wait_for_times_out,
            marks=pytest.mark.skipif(
                sys.version_info < (3, 12), reason="wait_for schedules a delay before 3.12"
            ),
        ),
        timeout_times_out,
        call_at_in_the_past_runs,
    ],
    ids=lambda work: work.__name__,
)
def test_an_unmended_loop_refuses_timers_due_in_the_past(work: Callable[[], Coroutine]) -> None:
    # What the browser host mends: without it, each of these fails on a busy device.
    with pytest.raises(ValueError, match="Can't schedule in the past"):
        run_on_busy_clock(NoPastLoop, work)


@pytest.mark.parametrize("work", CASES, ids=lambda work: work.__name__)
def test_a_mended_loop_runs_timers_due_in_the_past_at_once(work: Callable[[], Coroutine]) -> None:
    run_late_timers_at_once(MendedLoop)
    run_late_timers_at_once(MendedLoop)  # once or twice, the same
    assert run_on_busy_clock(MendedLoop, work) in {"timed out", "ran"}


def test_mending_keeps_later_timers_in_order() -> None:
    run_late_timers_at_once(MendedLoop)
    loop = MendedLoop()
    order: list[str] = []
    try:
        loop.call_later(0.02, order.append, "later")
        loop.call_later(-5, order.append, "past")
        loop.run_until_complete(asyncio.sleep(0.05))
    finally:
        loop.close()
    assert order == ["past", "later"]
