"""The IndexedDB backend's answers (``_answer``), in CPython: the waiting task resumes inside the
call that answers it when no task is running (as in an IndexedDB event handler), through
``call_soon`` when one is, and a cancelled wait ends the task's wait at once; a read's answer,
decoded or not. The backend itself runs in Chromium: tests/browser/test_store.py."""

from __future__ import annotations

import asyncio

import pytest

from valor.store.backend import Record
from valor.store.indexeddb import TABS, IndexedDBBackend, _answer

pytestmark = [pytest.mark.timeout(30)]


async def waiting_task(
    loop: asyncio.AbstractEventLoop,
) -> tuple[asyncio.Future[object], list[str], asyncio.Task[None]]:
    """A future, and a task waiting on it that notes ``got <result>`` in ``steps``."""
    answer: asyncio.Future[object] = loop.create_future()
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
            _answer(answer, 7)
            steps.append("event handler returns")

        loop.call_soon(event)
        await task
        assert steps == ["got 7", "event handler returns"]

    asyncio.run(main())


def test_an_answer_given_while_a_task_runs_wakes_the_waiter_later() -> None:
    async def main() -> None:
        answer, steps, task = await waiting_task(asyncio.get_running_loop())
        _answer(answer, "x")  # from this running task: no nested step
        steps.append("answered")
        await task
        assert steps == ["answered", "got x"]

    asyncio.run(main())


def test_an_exception_reaches_the_waiter_and_a_cancelled_wait_ends_at_once() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        failing = loop.create_future()
        loop.call_soon(_answer, failing, None, ValueError("refused"))
        with pytest.raises(ValueError, match="refused"):
            await failing

        never = loop.create_future()
        task = loop.create_task(_wait(never))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert never.cancelled()
        _answer(never, 1)  # the operation's late answer is ignored
        assert never.cancelled()

        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await loop.create_future()

    asyncio.run(main())


async def _wait(answer: asyncio.Future[object]) -> object:
    return await answer


def test_a_read_answers_the_value_decoded_or_the_record() -> None:
    """``get_value`` (``Store.get``) is answered with the value decoded in the answering call,
    ``get`` (``get_entry``) with the record; an expired entry reads as none, and a value the
    codec did not write reaches the reader as its error instead of leaving it waiting."""

    async def main() -> None:
        backend = IndexedDBBackend("test")
        backend._buffer = memoryview(bytearray(64))
        backend._buffer[:9] = b'j{"a":[1]'
        backend._buffer[9:10] = b"}"
        backend._db = object()  # open: the helper below takes the reads
        backend._helper = started = _Started()
        decoded = backend.get_value("ns", "k", 100.0)
        record = backend.get("ns", "k", 100.0)
        expired = backend.get_value("ns", "k", 100.0)
        missing = backend.get_value("ns", "k", 100.0)
        corrupt = backend.get_value("ns", "k", 100.0)
        assert [number for _, _, _, number in started.reads] == [1, 2, 3, 4, 5]
        # Plain asyncio futures: a task awaiting one takes the C task's shortcuts.
        assert {type(read) for read in (decoded, record, expired)} == {asyncio.Future}
        backend._done(1, 10, 1234, 5, None)
        backend._done(2, 10, 1234, 5, 200.0)
        backend._done(3, 10, 1234, 5, 100.0)
        backend._done(4)
        backend._buffer[:1] = b"x"
        backend._done(5, 10, 1234, 5, None)
        assert await decoded == {"a": [1]}
        assert await record == Record("k", b'j{"a":[1]}', 1234 * TABS + 5, 200.0)
        assert await expired is None and await missing is None
        with pytest.raises(ValueError, match=r"not a store value \(tag b'x'\)"):
            await corrupt
        assert backend._seen == 1234 * TABS + 5 and not backend._waiting

    asyncio.run(main())


class _Started:
    """The JavaScript helper's ``get``, noting the reads started."""

    def __init__(self) -> None:
        self.reads: list[tuple[object, str, str, int]] = []

    def get(self, db: object, namespace: str, key: str, number: int) -> None:
        self.reads.append((db, namespace, key, number))
