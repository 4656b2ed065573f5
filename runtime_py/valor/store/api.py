"""``Store``: what a plug-in sees, one namespace of a backend. Async first; ``store.sync``
has the same operations, blocking, for sync handlers where the host can block."""

from __future__ import annotations

import asyncio
import base64
import binascii
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from . import codec
from .backend import VERSION_DIGITS, Backend, Check, Commit, Mutation
from .errors import BatchInvalid, CursorInvalid, StoreError
from .limits import (
    MAX_BATCH_OPERATIONS,
    check_expiry,
    check_increment,
    check_key,
    check_limit,
    check_prefix,
)

T = TypeVar("T")

CAN_BLOCK = sys.platform != "emscripten"
"""Whether a sync call can wait for the loop (a thread runs it). Pyodide's runtime worker has
one thread: there the sync API raises, saying to use ``async def``."""


@dataclass(frozen=True)
class Entry:
    """A live entry: its ``key``, ``value`` and ``version`` (for ``atomic().check``)."""

    key: str
    value: Any
    version: str


@dataclass(frozen=True)
class Page:
    """Entries of one ``list`` call, in key order; ``cursor`` gets the next page (None: the
    last page)."""

    entries: list[Entry]
    cursor: str | None


@dataclass(frozen=True)
class Committed:
    """An atomic batch's outcome: ``ok`` False when a check failed (nothing was written);
    ``version`` is the version of every entry the batch wrote."""

    ok: bool
    version: str | None


def render_version(number: int) -> str:
    return f"{number:0{VERSION_DIGITS}d}"


def parse_version(version: object, key: str) -> int | None:
    if version is None:
        return None
    if not isinstance(version, str) or len(version) != VERSION_DIGITS or not version.isdigit():
        raise BatchInvalid(
            f"check of store key {key!r}: version must be a version string from this store "
            f"or None, got {version!r}"
        )
    return int(version)


class Store:
    """One namespace of a backend: a plug-in's own (``ctx.store``), or one shared by name.

    ::

        await store.set("greeting", {"text": "hi"}, expire_in=60)
        entry = await store.get_entry("greeting")
        done = await store.atomic().check("greeting", entry.version).delete("greeting").commit()
    """

    def __init__(
        self,
        backend: Backend,
        namespace: str,
        *,
        clock: Callable[[], float] = time.time,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.backend = backend
        self.namespace = namespace
        self.clock = clock
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop
        self.sync = SyncStore(self)
        # A backend may answer a get with the value decoded (IndexedDB does, in the event
        # that answers the read): no record made, nothing left to do once resumed.
        self._get_value = getattr(backend, "get_value", None)

    @property
    def description(self) -> str:
        """The backend's name for this store, as errors and ``/_health`` give it."""
        return self.backend.description

    def __repr__(self) -> str:
        return f"Store({self.namespace!r} in {self.description})"

    # get, set, delete and increment build their one mutation themselves rather than through
    # ``atomic()``: they are most of a plug-in's calls, and a batch object, its lists and a
    # rendered version nobody reads were a measurable share of a fast backend's time.

    async def get(self, key: str) -> Any:
        """The value of ``key``, or None if it has none (or it expired)."""
        if self._get_value is not None:
            return await self._get_value(self.namespace, check_key(key), self.clock())
        record = await self.backend.get(self.namespace, check_key(key), self.clock())
        return None if record is None else codec.decode(record.value)

    async def get_entry(self, key: str) -> Entry | None:
        """``key``'s entry with its version, or None."""
        record = await self.backend.get(self.namespace, check_key(key), self.clock())
        if record is None:
            return None
        return Entry(record.key, codec.decode(record.value), render_version(record.version))

    async def set(self, key: str, value: Any, *, expire_in: float | None = None) -> str:
        """Store ``value`` (JSON-able or bytes) under ``key``, for ``expire_in`` seconds if
        given; returns the new version."""
        key = check_key(key)
        now = self.clock()
        expires_at = None if expire_in is None else now + check_expiry(expire_in, key)
        mutation = Mutation("set", key, codec.encode(value, key), expires_at)
        result = await self.backend.commit(self.namespace, (), (mutation,), now)
        assert result.version is not None
        return render_version(result.version)

    async def delete(self, key: str) -> None:
        """Remove ``key`` (nothing happens if it has no entry)."""
        mutation = Mutation("delete", check_key(key))
        await self.backend.commit(self.namespace, (), (mutation,), self.clock())

    async def increment(self, key: str, by: int = 1) -> int:
        """Add ``by`` to ``key``'s integer value atomically (a missing key counts as 0) and
        return the sum. ``NotAnInteger`` if the value is not an integer."""
        key = check_key(key)
        mutation = Mutation("increment", key, by=check_increment(by, key))
        result = await self.backend.commit(self.namespace, (), (mutation,), self.clock())
        return result.sums[0]

    async def list(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        """Up to ``limit`` entries whose keys start with ``prefix``, in key order, from where
        ``cursor`` (a previous page's) left off."""
        prefix = check_prefix(prefix)
        limit = check_limit(limit)
        start_after = _cursor_key(cursor, prefix) if cursor is not None else None
        records = await self.backend.list(
            self.namespace, prefix, start_after, limit + 1, self.clock()
        )
        more = len(records) > limit
        records = records[:limit]
        entries = [Entry(r.key, codec.decode(r.value), render_version(r.version)) for r in records]
        next_cursor = _cursor(entries[-1].key) if more and entries else None
        return Page(entries, next_cursor)

    def atomic(self) -> Atomic:
        """A batch of checks and changes committed all together or not at all."""
        return Atomic(self)


class Atomic:
    """Checks and mutations, committed together: ``store.atomic().check(key, version)
    .set(key, value).commit()``. If any check fails nothing is written and ``commit()``
    returns ``Committed(ok=False, version=None)``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._checks: list[Check] = []
        self._mutations: list[Mutation] = []

    def check(self, key: str, version: str | None) -> Atomic:
        """Go ahead only if ``key``'s entry has ``version`` (None: only if it has none)."""
        key = check_key(key)
        self._checks.append(Check(key, parse_version(version, key)))
        return self._counted()

    def set(self, key: str, value: Any, *, expire_in: float | None = None) -> Atomic:
        key = check_key(key)
        seconds = check_expiry(expire_in, key)
        expires_at = None if seconds is None else self._store.clock() + seconds
        self._mutations.append(Mutation("set", key, codec.encode(value, key), expires_at))
        return self._counted()

    def delete(self, key: str) -> Atomic:
        self._mutations.append(Mutation("delete", check_key(key)))
        return self._counted()

    def increment(self, key: str, by: int = 1) -> Atomic:
        key = check_key(key)
        self._mutations.append(Mutation("increment", key, by=check_increment(by, key)))
        return self._counted()

    async def commit(self) -> Committed:
        result = await self.run()
        version = render_version(result.version) if result.version is not None else None
        return Committed(result.ok, version)

    async def run(self) -> Commit:
        """Commit, returning the backend's ``Commit`` (with the increments' sums)."""
        store = self._store
        return await store.backend.commit(
            store.namespace, self._checks, self._mutations, store.clock()
        )

    def _counted(self) -> Atomic:
        if len(self._checks) + len(self._mutations) > MAX_BATCH_OPERATIONS:
            raise BatchInvalid(
                f"an atomic batch holds at most {MAX_BATCH_OPERATIONS} checks and mutations"
            )
        return self


class SyncStore:
    """``store.sync``: the store's operations for sync code in a worker thread (a sync
    handler on the server). Each waits for the same coroutine on the store's event loop."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def get(self, key: str) -> Any:
        return self._wait(self._store.get(key))

    def get_entry(self, key: str) -> Entry | None:
        return self._wait(self._store.get_entry(key))

    def set(self, key: str, value: Any, *, expire_in: float | None = None) -> str:
        return self._wait(self._store.set(key, value, expire_in=expire_in))

    def delete(self, key: str) -> None:
        return self._wait(self._store.delete(key))

    def increment(self, key: str, by: int = 1) -> int:
        return self._wait(self._store.increment(key, by))

    def list(self, prefix: str = "", *, limit: int = 100, cursor: str | None = None) -> Page:
        return self._wait(self._store.list(prefix, limit=limit, cursor=cursor))

    def atomic(self) -> SyncAtomic:
        return SyncAtomic(self._store, self)

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        loop = self._store._loop
        problem = _cannot_block(loop)
        if problem is not None:
            coroutine.close()
            raise StoreError(problem)
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()


class SyncAtomic(Atomic):
    """``store.sync.atomic()``: ``commit()`` blocks and returns ``Committed``."""

    def __init__(self, store: Store, sync: SyncStore) -> None:
        super().__init__(store)
        self._sync = sync

    def commit(self) -> Committed:  # type: ignore[override]
        return self._sync._wait(Atomic.commit(self))


def _cannot_block(loop: asyncio.AbstractEventLoop | None) -> str | None:
    """Why a sync call cannot wait here, or None if it can."""
    if not CAN_BLOCK:
        return (
            "the store's sync API cannot wait in this host (the browser's runtime has one "
            "thread): make the handler `async def` and use `await ctx.store...`"
        )
    if loop is None or loop.is_closed():
        return "this store has no running event loop to wait for; use the async API"
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        return (
            "the store's sync API blocks, and this code runs on the event loop: use "
            "`await store.get(...)` (an async handler) instead of `store.sync`"
        )
    return None


def _cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii").rstrip("=")


def _cursor_key(cursor: object, prefix: str) -> str:
    if isinstance(cursor, str):
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            key = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
        except (binascii.Error, UnicodeError, ValueError):
            key = None
        if key and key.startswith(prefix):
            return key
    raise CursorInvalid(f"list cursor {cursor!r} is not one this store gave for prefix {prefix!r}")
