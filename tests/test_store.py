"""The store's cases, one table run against every backend (memory, SQLite, a real Redis)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from valor.store import (
    MAX_BATCH_OPERATIONS,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    BatchInvalid,
    CursorInvalid,
    KeyInvalid,
    MemoryBackend,
    NotAnInteger,
    Store,
    StoreError,
    StoreUnavailable,
    ValueNotStorable,
    ValueTooLarge,
)
from valor.store.backend import Backend
from valor.store.redis import RedisBackend
from valor.store.sqlite import SqliteBackend
from valor.store.urls import open_backend, redacted

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


class Clock:
    """The real time plus an offset the test moves on: expiry without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class Opened:
    """A backend under test, and a way to open a second connection to the same store."""

    backend: Backend
    another: Callable[[], Awaitable[Backend]]
    clock: Clock

    def store(self, namespace: str = "test", backend: Backend | None = None) -> Store:
        return Store(backend or self.backend, namespace, clock=self.clock)


BACKENDS = ["memory", "sqlite", "redis"]


@pytest.fixture(params=BACKENDS)
async def opened(request: pytest.FixtureRequest) -> AsyncIterator[Opened]:
    clock = Clock()
    extra: list[Backend] = []
    if request.param == "memory":
        backend: Backend = MemoryBackend()

        async def another() -> Backend:
            return backend  # one process's memory: the same store is the same object

    elif request.param == "sqlite":
        path = request.getfixturevalue("tmp_path") / "store.sqlite3"
        backend = SqliteBackend(path)

        async def another() -> Backend:  # as another worker process would open it
            extra.append(SqliteBackend(path))
            return extra[-1]

    elif request.param == "redis":
        url = request.getfixturevalue("redis_url")
        backend = RedisBackend(url)
        await backend._connected().flushall()  # each test starts with an empty store

        async def another() -> Backend:  # as another machine would connect
            extra.append(RedisBackend(url))
            return extra[-1]

    else:
        raise AssertionError(request.param)
    yield Opened(backend, another, clock)
    for other in extra:
        await other.close()
    await backend.close()


# -- the table ------------------------------------------------------------------------------


async def case_missing_key(opened: Opened) -> None:
    store = opened.store()
    assert await store.get("nothing") is None
    assert await store.get_entry("nothing") is None


async def case_values_round_trip(opened: Opened) -> None:
    store = opened.store()
    values = [
        {"text": "hello", "tags": ["a", "b"], "n": 1.5},
        [1, 2, 3],
        "späti ✓ 😀",
        42,
        -7,
        0.1,
        True,
        False,
        None,
        b"\x00\xffraw",
        b"",
        {},
    ]
    for index, value in enumerate(values):
        await store.set(f"v{index}", value)
    for index, value in enumerate(values):
        entry = await store.get_entry(f"v{index}")
        assert entry is not None
        assert entry.value == value and type(entry.value) is type(value), (index, entry)
    assert await store.get("t") is None
    await store.set("t", (1, 2))
    assert await store.get("t") == [1, 2]  # as JSON has it


async def case_versions_grow_and_sort(opened: Opened) -> None:
    store = opened.store()
    first = await store.set("a", 1)
    second = await store.set("b", 2)
    third = await store.set("a", 3)
    assert len({len(first), len(second), len(third)}) == 1
    assert first < second < third
    assert int(first) < int(second) < int(third)
    entry = await store.get_entry("a")
    assert entry is not None and entry.version == third and entry.value == 3


async def case_delete(opened: Opened) -> None:
    store = opened.store()
    await store.set("gone", "soon")
    await store.delete("gone")
    assert await store.get_entry("gone") is None
    await store.delete("never-there")  # no error
    assert (await store.list()).entries == []


async def case_list_prefix_order_and_pages(opened: Opened) -> None:
    store = opened.store()
    keys = ["note/10", "note/2", "note/1", "note0", "note", "other/1", "note/\uffff", "note/😀"]
    for key in keys:
        await store.set(key, key.upper())
    page = await store.list("note/")
    # Code point order (as UTF-8 bytes sort): U+FFFF before U+1F600.
    assert [e.key for e in page.entries] == [
        "note/1",
        "note/10",
        "note/2",
        "note/\uffff",
        "note/😀",
    ]
    assert page.cursor is None
    assert page.entries[0].value == "NOTE/1"
    every = await store.list()
    assert [e.key for e in every.entries] == sorted(keys)
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page = await store.list("note/", limit=2, cursor=cursor)
        assert len(page.entries) <= 2
        seen += [e.key for e in page.entries]
        cursor = page.cursor
        if cursor is None:
            break
    assert seen == ["note/1", "note/10", "note/2", "note/\uffff", "note/😀"]
    exact = await store.list("note/2", limit=1)
    assert [e.key for e in exact.entries] == ["note/2"] and exact.cursor is None


async def case_list_bad_arguments(opened: Opened) -> None:
    store = opened.store()
    await store.set("a/1", 1)
    await store.set("a/2", 2)
    page = await store.list("a/", limit=1)
    assert page.cursor is not None
    with pytest.raises(CursorInvalid, match="'b/'"):
        await store.list("b/", cursor=page.cursor)  # another prefix's cursor
    with pytest.raises(CursorInvalid):
        await store.list("a/", cursor="not base64!")
    for limit in (0, -1, 1001, True, 1.5):
        with pytest.raises(BatchInvalid):
            await store.list(limit=limit)  # type: ignore[arg-type]


async def case_expiry(opened: Opened) -> None:
    store = opened.store()
    await store.set("short", "lived", expire_in=10)
    await store.set("long", "lived", expire_in=1000)
    await store.set("forever", "lived")
    opened.clock.advance(9)
    assert await store.get("short") == "lived"
    opened.clock.advance(2)
    assert await store.get("short") is None
    assert await store.get_entry("short") is None
    assert [e.key for e in (await store.list()).entries] == ["forever", "long"]
    # An expired entry counts as absent for checks, and for increments.
    done = await store.atomic().check("short", None).set("short", "again").commit()
    assert done.ok
    assert await store.get("short") == "again"
    await store.set("counter", 5, expire_in=10)
    assert await store.increment("counter") == 6  # the expiry stays as it was
    await store.set("word", "abc", expire_in=10)  # expired, a value of any kind is absent
    opened.clock.advance(11)
    assert await store.get("counter") is None
    assert await store.increment("counter") == 1
    assert await store.increment("word", 5) == 5
    entry = await store.get_entry("word")
    assert entry is not None and entry.value == 5
    assert [e.key for e in (await store.list()).entries] == [
        "counter",
        "forever",
        "long",
        "short",
        "word",
    ]
    opened.clock.advance(1000)  # an increment made the entry anew, with no expiry
    assert await store.get("word") == 5
    for bad in (0, -1, float("nan"), float("inf"), "10", True):
        with pytest.raises(BatchInvalid, match="'k'"):
            await store.set("k", 1, expire_in=bad)  # type: ignore[arg-type]


async def case_increment(opened: Opened) -> None:
    store = opened.store()
    assert await store.increment("hits") == 1
    assert await store.increment("hits") == 2
    assert await store.increment("hits", 10) == 12
    assert await store.increment("hits", -20) == -8
    assert await store.get("hits") == -8
    await store.set("text", "abc")
    await store.set("float", 1.5)
    for key in ("text", "float"):
        with pytest.raises(NotAnInteger, match=repr(key)):
            await store.increment(key)
    assert await store.get("text") == "abc"
    await store.set("big", 2**53 - 2)
    assert await store.increment("big") == 2**53 - 1
    with pytest.raises(NotAnInteger, match="'big'"):
        await store.increment("big")
    assert await store.get("big") == 2**53 - 1
    with pytest.raises(BatchInvalid, match="'hits'"):
        await store.increment("hits", 1.0)  # type: ignore[arg-type]


async def case_atomic_checks(opened: Opened) -> None:
    store = opened.store()
    version = await store.set("doc", {"rev": 1})
    # A check that holds: every mutation lands, under one version.
    done = await (
        store.atomic()
        .check("doc", version)
        .check("fresh", None)
        .set("doc", {"rev": 2})
        .set("fresh", "x")
        .increment("count", 3)
        .delete("missing")
        .commit()
    )
    assert done.ok and done.version is not None and done.version > version
    for key in ("doc", "fresh", "count"):
        entry = await store.get_entry(key)
        assert entry is not None and entry.version == done.version
    # A stale version: nothing is written.
    failed = await store.atomic().check("doc", version).set("doc", {"rev": 3}).commit()
    assert failed.ok is False and failed.version is None
    assert await store.get("doc") == {"rev": 2}
    # None means "must not exist".
    refused = await store.atomic().check("fresh", None).set("other", 1).commit()
    assert not refused.ok
    assert await store.get("other") is None
    # A failing increment writes nothing either.
    await store.set("word", "w")
    with pytest.raises(NotAnInteger, match="'word'"):
        await store.atomic().set("side", 1).increment("word").commit()
    assert await store.get("side") is None
    # Mutations apply in order.
    await store.atomic().set("k", 1).delete("k").increment("n").increment("n").commit()
    assert await store.get("k") is None and await store.get("n") == 2
    for bad in ("1", 1, "x" * 20):
        with pytest.raises(BatchInvalid, match="'doc'"):
            store.atomic().check("doc", bad)  # type: ignore[arg-type]


async def case_limits(opened: Opened) -> None:
    store = opened.store()
    longest = "k" * MAX_KEY_BYTES
    await store.set(longest, 1)
    assert await store.get(longest) == 1
    with pytest.raises(KeyInvalid, match="513 bytes"):
        await store.set("k" * (MAX_KEY_BYTES + 1), 1)
    with pytest.raises(KeyInvalid, match="514 bytes"):
        await store.get("é" * 257)
    for bad in ("", 5, None, b"bytes", "nul\x00", "\ud800"):
        with pytest.raises(KeyInvalid):
            await store.get(bad)  # type: ignore[arg-type]
        with pytest.raises(KeyInvalid):
            await store.set(bad, 1)  # type: ignore[arg-type]
    largest = b"x" * (MAX_VALUE_BYTES - 1)  # one byte for the tag
    await store.set("blob", largest)
    assert await store.get("blob") == largest
    with pytest.raises(ValueTooLarge, match="'blob'"):
        await store.set("blob", largest + b"x")
    with pytest.raises(ValueTooLarge, match="'text'"):
        await store.set("text", "y" * MAX_VALUE_BYTES)
    assert await store.get("blob") == largest
    for bad in (object(), float("nan"), {1j: 2}, {"set": {1, 2}}):
        with pytest.raises(ValueNotStorable, match="'odd'"):
            await store.set("odd", bad)
    assert await store.get("odd") is None
    batch = store.atomic()
    for index in range(MAX_BATCH_OPERATIONS):
        batch.set(f"b{index}", index)
    with pytest.raises(BatchInvalid, match=str(MAX_BATCH_OPERATIONS)):
        batch.set("one-more", 1)
    assert (await batch.commit()).ok
    assert await store.get(f"b{MAX_BATCH_OPERATIONS - 1}") == MAX_BATCH_OPERATIONS - 1
    assert issubclass(KeyInvalid, StoreError) and issubclass(ValueTooLarge, StoreError)


async def case_namespaces_are_separate(opened: Opened) -> None:
    notes, cart = opened.store("notes"), opened.store("cart")
    await notes.set("item", "note")
    await cart.set("item", "cart")
    assert await notes.get("item") == "note"
    assert await cart.get("item") == "cart"
    assert [e.value for e in (await cart.list()).entries] == ["cart"]
    await notes.delete("item")
    assert await cart.get("item") == "cart"


async def case_concurrent_increments(opened: Opened) -> None:
    first = opened.store("shared")
    second = opened.store("shared", await opened.another())
    results = await asyncio.gather(
        *(first.increment("id") for _ in range(100)),
        *(second.increment("id") for _ in range(100)),
    )
    assert sorted(results) == list(range(1, 201))
    assert await first.get("id") == 200


async def case_concurrent_compare_and_set(opened: Opened) -> None:
    """Writers racing to add one each to a value with check-and-set: none is lost."""
    stores = [opened.store("shared"), opened.store("shared", await opened.another())]
    await stores[0].set("total", {"n": 0})
    retries = 0

    async def add_one(store: Store) -> None:
        nonlocal retries
        while True:
            entry = await store.get_entry("total")
            assert entry is not None
            new = {"n": entry.value["n"] + 1}
            done = await store.atomic().check("total", entry.version).set("total", new).commit()
            if done.ok:
                return
            retries += 1

    await asyncio.gather(*(add_one(stores[i % 2]) for i in range(40)))
    assert await stores[1].get("total") == {"n": 40}


async def case_concurrent_commits_fail_alone(opened: Opened) -> None:
    """A batch that fails (a stale check, an increment of a word) among many at once writes
    nothing, and takes nothing from the others (SQLite commits them in one transaction)."""
    store = opened.store()
    await store.set("word", "w")
    stale = await store.set("doc", 1)
    await store.set("doc", 2)

    async def good(index: int) -> bool:
        return (await store.atomic().set(f"good/{index}", index).increment("n").commit()).ok

    async def bad_increment(index: int) -> bool:
        try:
            await store.atomic().set(f"bad/{index}", index).increment("word").commit()
        except NotAnInteger:
            return False
        return True

    async def bad_check(index: int) -> bool:
        batch = store.atomic().check("doc", stale).set(f"stale/{index}", index)
        return (await batch.commit()).ok

    results = await asyncio.gather(
        *(task(index) for index in range(30) for task in (good, bad_increment, bad_check))
    )
    assert results == [True, False, False] * 30
    assert await store.get("n") == 30
    keys = [entry.key for entry in (await store.list(limit=1000)).entries]
    assert len([key for key in keys if key.startswith("good/")]) == 30
    assert not [key for key in keys if key.startswith(("bad/", "stale/"))]


CASES = [value for name, value in sorted(globals().items()) if name.startswith("case_")]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__.removeprefix("case_"))
async def test_store(opened: Opened, case: Callable[[Opened], Awaitable[None]]) -> None:
    await case(opened)


# -- the sync API -----------------------------------------------------------------------------


async def test_sync_api_from_a_thread() -> None:
    store = Store(MemoryBackend(), "sync")

    def work() -> list[object]:
        store.sync.set("a", {"x": 1})
        total = store.sync.increment("n", 5)
        entry = store.sync.get_entry("a")
        assert entry is not None
        done = store.sync.atomic().check("a", entry.version).set("a", 2).commit()
        return [store.sync.get("a"), total, done.ok, [e.key for e in store.sync.list().entries]]

    assert await asyncio.to_thread(work) == [2, 5, True, ["a", "n"]]


async def test_sync_api_on_the_loop_says_to_await() -> None:
    store = Store(MemoryBackend(), "sync")
    with pytest.raises(StoreError, match=r"await store\.get"):
        store.sync.get("a")


def test_sync_api_without_a_loop() -> None:
    store = Store(MemoryBackend(), "sync")
    with pytest.raises(StoreError, match="no running event loop"):
        store.sync.set("a", 1)


def test_sync_api_where_the_host_cannot_block(monkeypatch: pytest.MonkeyPatch) -> None:
    from valor.store import api

    monkeypatch.setattr(api, "CAN_BLOCK", False)
    store = Store(MemoryBackend(), "sync")
    with pytest.raises(StoreError, match="async def"):
        store.sync.get("a")


# -- store URLs ---------------------------------------------------------------------------------


def test_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_backend("memory:", tmp_path), MemoryBackend)
    for url, path in [
        ("sqlite:///data/s.sqlite3", tmp_path / "data/s.sqlite3"),  # relative, as SQLAlchemy's
        (f"sqlite:///{tmp_path}/abs.sqlite3", tmp_path / "abs.sqlite3"),
        ("plain.sqlite3", tmp_path / "plain.sqlite3"),
    ]:
        backend = open_backend(url, tmp_path)
        assert isinstance(backend, SqliteBackend) and backend.path == path, url
        assert backend.description == f"sqlite:///{path}"
    for bad in ("sqlite://x", "sqlite:///", "postgres://db/x", ""):
        with pytest.raises(StoreError, match="store URL"):
            open_backend(bad, tmp_path)
    assert redacted("redis://user:secret@host:6379/0") == "redis://user:***@host:6379/0"
    assert redacted("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"
    assert redacted("redis://host:6379/0") == "redis://host:6379/0"


# -- Redis's connection ---------------------------------------------------------------------


async def test_redis_that_does_not_answer_is_unavailable_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each command is timed by the backend itself (the client has no socket timeout)."""
    silent: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)  # reads nothing, answers nothing

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr("valor.store.redis.SOCKET_TIMEOUT", 0.3)
    backend = RedisBackend(f"redis://127.0.0.1:{port}/0")
    store = Store(backend, "test")
    try:
        for call in (store.get("k"), store.set("k", 1), store.increment("n")):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"no answer within 0\.3 s"):
                await call
            assert time.monotonic() - started < 5
        # Calls started apart each wait their own time; one its caller cancels is cancelled.
        first = asyncio.create_task(store.get("a"))
        await asyncio.sleep(0.15)
        second_started = time.monotonic()
        second = asyncio.create_task(store.get("b"))
        cancelled = asyncio.create_task(store.get("c"))
        await asyncio.sleep(0.05)
        cancelled.cancel()
        with pytest.raises(StoreUnavailable):
            await first
        with pytest.raises(StoreUnavailable):
            await second
        assert time.monotonic() - second_started >= 0.3  # not ended with the first
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert not backend._in_flight and not backend._expired
    finally:
        await backend.close()
        for writer in silent:
            writer.close()
        server.close()


async def test_redis_loads_its_scripts_again_when_the_server_lost_them(redis_url: str) -> None:
    backend = RedisBackend(redis_url)
    store = Store(backend, "scripts")
    try:
        await backend._connected().flushall()
        assert await store.increment("n") == 1
        await backend._connected().script_flush()
        assert await store.increment("n") == 2
        await store.set("k", "v")
        assert await store.get("k") == "v"
    finally:
        await backend.close()


async def test_redis_connections_closed_between_calls_are_opened_again(redis_url: str) -> None:
    """The backend keeps its connections open between calls; one Redis closed meanwhile
    (a restart, its idle ``timeout``) is not written to: the next write is answered once."""
    from valor.store.redis import _ready

    backend = RedisBackend(redis_url)
    store = Store(backend, "kept")
    try:
        client = backend._connected()
        await client.flushall()
        assert await store.increment("n") == 1
        await asyncio.gather(*(store.get("k") for _ in range(3)))
        kept = list(backend._idle)
        assert len(kept) == 3 and all(_ready(connection) for connection in kept)
        assert await store.increment("n") == 2  # on a kept connection: no new one
        assert {id(connection) for connection in backend._idle} == {id(c) for c in kept}
        await client.execute_command("CLIENT", "KILL", "TYPE", "normal")
        for _ in range(500):
            if not any(_ready(connection) for connection in kept):
                break
            await asyncio.sleep(0.01)
        assert not any(_ready(connection) for connection in kept)
        assert await store.increment("n") == 3
        await store.set("k", "v")
        assert await store.get("k") == "v"
    finally:
        await backend.close()
    assert not backend._idle


def test_redis_commands_are_packed_as_redis_py_packs_them() -> None:
    from redis.asyncio.connection import Connection

    from valor.store.redis import _COUNTER, _INCREMENT, _SET, _SHA, _head, _lone, _packed

    def redis_py(*parts: object) -> bytes:
        return b"".join(Connection().pack_command(*parts))

    value = "späti ✓".encode() + bytes(range(256))
    assert _packed(b"GET", "k ✓", 3, 1.5, b"") == redis_py("GET", "k ✓", 3, 1.5, b"")
    for script, last in ((_SET, b""), (_INCREMENT, b"1765140000.25")):
        head = _head(script, b"valor:n:k")
        packed = _lone(head, b"valor:n:e:k\xe2\x9c\x93", b"k\xe2\x9c\x93", value, last)
        assert packed == redis_py(
            "EVALSHA", _SHA[script], 3, _COUNTER, "valor:n:k", "valor:n:e:k✓", "k✓", value, last
        )
