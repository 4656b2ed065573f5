"""The IndexedDB backend's future (``_Answer``), in CPython: the waiting task resumes inside the
call that answers it when no task is running (as in an IndexedDB event handler), through
``call_soon`` when one is, and a cancelled wait ends the task's wait at once. The backend
itself runs in Chromium: tests/browser/test_store.py."""

from __future__ import annotations

import asyncio

import pytest

from valor.store.indexeddb import _Answer

pytestmark = [pytest.mark.timeout(30)]


async def waiting_task(
    loop: asyncio.AbstractEventLoop,
) -> tuple[_Answer, list[str], asyncio.Task[None]]:
    """An answer, and a task waiting on it that notes ``got <result>`` in ``steps``."""
    answer = _Answer(loop=loop)
    steps: list[str] = []

    async def waiter() -> None:
        steps.append(f"got {await answer}")

    task = loop.create_task(waiter())
    await asyncio.sleep(0)  # the task now waits on the answer
    return answer, steps, task


def test_the_waiting_task_resumes_inside_the_answering_call() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        answer, steps, task = await waiting_task(loop)

        def event() -> None:  # as an IndexedDB event handler: no task runs
            answer.answer(7)
            steps.append("event handler returns")

        loop.call_soon(event)
        await task
        assert steps == ["got 7", "event handler returns"]

    asyncio.run(main())


def test_an_answer_given_while_a_task_runs_wakes_the_waiter_later() -> None:
    async def main() -> None:
        answer, steps, task = await waiting_task(asyncio.get_running_loop())
        answer.answer("x")  # from this running task: no nested step
        steps.append("answered")
        await task
        assert steps == ["answered", "got x"]

    asyncio.run(main())


def test_an_exception_reaches_the_waiter_and_a_cancelled_wait_ends_at_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        failing = _Answer(loop=loop)
        loop.call_soon(failing.answer, None, ValueError("refused"))
        with pytest.raises(ValueError, match="refused"):
            await failing

        never = _Answer(loop=loop)
        task = loop.create_task(_wait(never))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert never.cancelled()
        never.answer(1)  # the operation's late answer is ignored
        assert never.cancelled()

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await _Answer(loop=loop)

    asyncio.run(main())


async def _wait(answer: _Answer) -> object:
    return await answer
