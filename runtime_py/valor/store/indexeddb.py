"""The browser's store: IndexedDB, reached from the runtime worker (Pyodide).

One database per site (origin and base), so every tab's runtime shares it, and it outlasts
reloads and offline visits. Entries live in ``entries`` under ``[namespace, key as UTF-8
bytes]``: binary keys compare bytewise, which is the store's code-point order (IndexedDB
compares strings by UTF-16 code units, which puts U+10000 and above before U+E000..U+FFFF).
``meta`` holds the version counter.

A commit is one read-write transaction: it reads what its checks and increments need and the
counter, then writes, all from the transaction's own event handlers. IndexedDB commits a
transaction once control returns to the event loop with no request pending, and Pyodide's
event loop resumes a coroutine in a later task: awaiting between two requests would let the
transaction commit in between. Read-write transactions over the same stores run one after
another, across connections and tabs, so a commit's reads and writes are atomic.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from .backend import Check, Commit, Mutation, Record, planned_writes
from .errors import NotAnInteger, StoreFull, StoreUnavailable

try:
    from pyodide.ffi import JsException, create_proxy, to_js
except ImportError:  # CPython: importable for tools; only Pyodide runs it
    JsException = Exception  # type: ignore[assignment,misc]

    def create_proxy(value: Any) -> Any:
        raise RuntimeError("the IndexedDB store runs inside Pyodide only")

    to_js = create_proxy

DATABASE_VERSION = 1
ENTRIES = "entries"
META = "meta"
EXPIRY_INDEX = "expiry"
VERSION_KEY = "version"
SWEEP_EVERY = 60.0
"""Seconds between two clean-ups of expired entries (done inside a commit's transaction)."""
SWEEP_BATCH = 100
"""Expired entries removed by one clean-up at most, so a commit never waits long for it."""
LIST_BATCH_MIN = 16
HANDLERS = ("onupgradeneeded", "onblocked", "onsuccess", "onerror")
READ = (ENTRIES,)
WRITE = (ENTRIES, META)


def database_name(base: str) -> str:
    """The database of the site at ``base`` (the bundle's base path, e.g. ``/`` or ``/app/``)."""
    return f"valor-store:{base}"


class IndexedDBBackend:
    """The store's entries in the site's IndexedDB database, shared by all its tabs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.description = f"indexeddb:{name}"
        self._db: Any = None
        self._opening: asyncio.Future[Any] | None = None
        self._next_sweep = 0.0
        self._known: int | None = None  # the version counter as this connection last saw it
        self._committing = 0  # this connection's commits under way

    # -- the protocol ---------------------------------------------------------------------------

    async def get(self, namespace: str, key: str, now: float) -> Record | None:
        db = await self._database()
        found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def read(transaction: Any) -> None:
            request = transaction.objectStore(ENTRIES).get(_key(namespace, key))

            def got() -> None:
                _settle(found, _record(request.result, now))

            _on_request(request, got, found, self._unavailable)

        self._transaction(db, READ, "readonly", read, found)
        return await found

    async def list(
        self, namespace: str, prefix: str, start_after: str | None, limit: int, now: float
    ) -> list[Record]:
        db = await self._database()
        listed: asyncio.Future[list[Record]] = asyncio.get_running_loop().create_future()
        import js

        if start_after is not None and start_after >= prefix:
            lower, lower_open = start_after.encode(), True
        else:
            lower, lower_open = prefix.encode(), False
        upper = _after_prefix(prefix.encode())
        found: list[Record] = []

        def read(transaction: Any) -> None:
            store = transaction.objectStore(ENTRIES)

            def batch(lower: bytes, lower_open: bool) -> None:
                keys = js.IDBKeyRange.bound(
                    _key_of(namespace, lower), _key_of(namespace, upper), lower_open, True
                )
                wanted = max(limit - len(found), LIST_BATCH_MIN)
                request = store.getAll(keys, wanted)

                def got() -> None:
                    values = request.result
                    count = values.length
                    last = None
                    for index in range(count):
                        value = values[index]
                        last = value.k
                        record = _record(value, now)
                        if record is not None:
                            found.append(record)
                            if len(found) == limit:
                                break
                    if len(found) < limit and count == wanted and last is not None:
                        batch(last.encode(), True)  # expired ones were skipped: read on
                    else:
                        _settle(listed, found)

                _on_request(request, got, listed, self._unavailable)

            batch(lower, lower_open)

        self._transaction(db, READ, "readonly", read, listed)
        return await listed

    async def commit(
        self, namespace: str, checks: Sequence[Check], mutations: Sequence[Mutation], now: float
    ) -> Commit:
        # Plain writes (no checks, no increments) need the counter only for their version: when
        # this connection knows it and has nothing else under way, they write with the next
        # version at once and check the counter in the same transaction (undone if another
        # tab moved it): one round of events instead of two.
        blind = not checks and all(m.kind != "increment" for m in mutations)
        predicted = None
        if blind and mutations and self._known is not None and not self._committing:
            predicted = self._known + 1
        self._committing += 1
        try:
            try:
                return await self._commit(namespace, checks, mutations, now, predicted)
            except _Mispredicted:
                return await self._commit(namespace, checks, mutations, now, None)
        finally:
            self._committing -= 1

    async def _commit(
        self,
        namespace: str,
        checks: Sequence[Check],
        mutations: Sequence[Mutation],
        now: float,
        predicted: int | None,
    ) -> Commit:
        db = await self._database()
        done: asyncio.Future[Commit] = asyncio.get_running_loop().create_future()
        sweep = bool(mutations) and now >= self._next_sweep
        if sweep:
            self._next_sweep = now + SWEEP_EVERY
        batch = _Batch(namespace, checks, mutations, now, sweep, done, predicted)
        self._transaction(db, WRITE, "readwrite", batch.start, done, batch.outcome)
        try:
            return await done
        finally:
            if batch.counter is not None:
                self._known = batch.counter

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- connections and transactions ---------------------------------------------------------

    async def _database(self) -> Any:
        if self._db is not None:
            return self._db
        if self._opening is None:  # one opening for every operation waiting for it
            self._opening = asyncio.ensure_future(self._open())
            self._opening.add_done_callback(self._opened)
        return await asyncio.shield(self._opening)

    def _opened(self, opening: asyncio.Future[Any]) -> None:
        # Opened or failed: after a failure the next operation tries again (the store may be
        # back); the waiting operations got the failure.
        self._opening = None
        if not opening.cancelled():
            opening.exception()

    async def _open(self) -> Any:
        import js

        factory = getattr(js, "indexedDB", None)
        if factory is None:
            raise StoreUnavailable(self.description, "IndexedDB is not available here")
        opened: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        try:
            request = factory.open(self.name, DATABASE_VERSION)
        except JsException as exc:
            raise StoreUnavailable(self.description, f"opening failed: {exc}") from None

        def event(event: Any) -> None:
            kind = event.type
            if kind == "upgradeneeded":
                db = request.result
                entries = db.createObjectStore(ENTRIES)
                entries.createIndex(EXPIRY_INDEX, "e")
                db.createObjectStore(META)
                return
            if kind == "blocked":
                return  # an older connection closes on its versionchange event
            for name in HANDLERS:
                setattr(request, name, None)
            handler.destroy()
            if kind == "success":
                _settle(opened, request.result)
            else:
                error = request.error
                _fail(opened, self._unavailable(error, "opening failed"))

        handler = create_proxy(event)
        for name in HANDLERS:
            setattr(request, name, handler)
        db = await opened

        def gone(event: Any) -> None:
            # A newer build's schema wants the database, or the browser closed it (storage
            # cleared): let go, and open it again on the next operation.
            if event.type == "versionchange":
                db.close()
            if self._db is db:
                self._db = None
            db.onversionchange = db.onclose = None
            watcher.destroy()

        watcher = create_proxy(gone)
        db.onversionchange = watcher
        db.onclose = watcher
        self._db = db
        return db

    def _transaction(
        self,
        db: Any,
        stores: tuple[str, ...],
        mode: str,
        start: Callable[[Any], None],
        future: asyncio.Future[Any],
        outcome: Callable[[], Any] | None = None,
    ) -> None:
        """Run ``start(transaction)`` in a new transaction. A read's requests settle
        ``future`` themselves; a write's ``outcome()`` settles it once the transaction has
        committed: an answer is given only after the write is as durable as IndexedDB makes
        it."""
        try:
            transaction = db.transaction(_js_array(stores), mode)
        except JsException as exc:
            if self._db is db:
                self._db = None  # closing or closed: the next operation opens it again
            raise StoreUnavailable(self.description, f"no transaction: {exc}") from None

        def ended(event: Any) -> None:
            if event.type != "complete":
                _fail(future, self._unavailable(transaction.error, "the transaction was aborted"))
            elif outcome is not None and not future.done():
                try:
                    _settle(future, outcome())
                except Exception as exc:
                    _fail(future, exc)

        if mode == "readwrite":
            _on(transaction, ended, "oncomplete", "onabort")
        try:
            start(transaction)
        except Exception as exc:
            _fail(future, exc)
            _abort(transaction)

    def _unavailable(self, error: Any, what: str) -> StoreUnavailable:
        name = getattr(error, "name", None) if error is not None else None
        message = getattr(error, "message", "") if error is not None else ""
        reason = f"{what}: {name}: {message}" if name else what
        if name == "QuotaExceededError":
            return StoreFull(self.description, f"the browser's storage quota is used up ({reason})")
        return StoreUnavailable(self.description, reason)


class _Batch:
    """One commit inside its read-write transaction: first the reads (the counter, and the
    entries that checks and increments need), then, from the last read's success handler,
    every write; ``outcome`` is what the commit returns once the transaction has committed."""

    def __init__(
        self,
        namespace: str,
        checks: Sequence[Check],
        mutations: Sequence[Mutation],
        now: float,
        sweep: bool,
        done: asyncio.Future[Commit],
        predicted: int | None = None,
    ) -> None:
        self.done = done
        self.predicted = predicted
        self.counter: int | None = None
        """The version counter as this transaction left it (once it has read it)."""
        self.namespace = namespace
        self.checks = checks
        self.mutations = mutations
        self.now = now
        self.sweep = sweep
        self.result = Commit(True)
        self.failure: Exception | None = None

    def start(self, transaction: Any) -> None:
        self.entries = transaction.objectStore(ENTRIES)
        self.meta = transaction.objectStore(META)
        if self.predicted is not None:
            counter = self.meta.get(VERSION_KEY)
            self.apply(transaction, {}, self.predicted)
            _on_request(counter, lambda: self.confirm(counter.result), self.done)
            return
        needed = [check.key for check in self.checks]
        needed += [m.key for m in self.mutations if m.kind == "increment"]
        self.keys = list(dict.fromkeys(needed))
        requests = [self.entries.get(_key(self.namespace, key)) for key in self.keys]
        if self.mutations:
            requests.append(self.meta.get(VERSION_KEY))
        if not requests:
            return  # nothing to check, nothing to write
        last = requests[-1]
        # Requests succeed in the order they were made: when the last one has, all have.
        _on_request(last, lambda: self.write(transaction, requests), self.done)

    def write(self, transaction: Any, requests: list[Any]) -> None:
        current: dict[str, Record | None] = {
            key: _record(request.result, self.now)
            for key, request in zip(self.keys, requests, strict=False)
        }
        for check in self.checks:
            record = current[check.key]
            if (record.version if record is not None else None) != check.version:
                self.result = Commit(False)
                return
        if not self.mutations:
            return
        counter = requests[-1].result
        self.counter = int(counter) if counter is not None else 0
        self.apply(transaction, current, self.counter + 1)

    def apply(self, transaction: Any, current: dict[str, Record | None], version: int) -> None:
        """Write every mutation under ``version``, increments from ``current``."""
        try:
            written, sums = planned_writes(self.mutations, current.get, version)
        except NotAnInteger as exc:
            self.failure = exc
            return
        for key, record in written.items():
            if record is None:
                self.entries.delete(_key(self.namespace, key))
            else:
                self.entries.put(_value(record), _key(self.namespace, key))
        self.meta.put(version, VERSION_KEY)
        self.result = Commit(True, version, sums)
        self.counter = version
        if self.sweep:
            self._sweep(transaction)

    def confirm(self, counter: Any) -> None:
        """The predicted version's check: the counter must be just below it, else the
        transaction is undone (``_Mispredicted`` aborts it) and the commit is made again."""
        found = int(counter) if counter is not None else 0
        if found + 1 != self.predicted:
            self.counter = found
            raise _Mispredicted(found)

    def _sweep(self, transaction: Any) -> None:
        """Remove some entries that expired (of any namespace): nobody sees them any more."""
        import js

        index = self.entries.index(EXPIRY_INDEX)
        request = index.getAllKeys(js.IDBKeyRange.upperBound(self.now), SWEEP_BATCH)

        def remove() -> None:
            keys = request.result
            for position in range(keys.length):
                self.entries.delete(keys[position])

        _on_request(request, remove, self.done)

    def outcome(self) -> Commit:
        if self.failure is not None:
            raise self.failure
        return self.result


class _Mispredicted(Exception):
    """Another connection moved the version counter since this one last saw it."""


# -- helpers -----------------------------------------------------------------------------------


def _on_request(
    request: Any,
    then: Callable[[], None],
    future: asyncio.Future[Any],
    failed: Callable[[Any, str], Exception] | None = None,
) -> None:
    """Run ``then()`` in ``request``'s success handler, while its transaction is active. A
    failure of ``then`` fails ``future`` and aborts the transaction: nothing half-written. A
    failed request aborts its transaction (as IndexedDB does): a read's ``future`` fails with
    ``failed(error, ...)``, a write's with the transaction's own error, from its handler."""

    def event(event: Any) -> None:
        if event.type != "success":
            if failed is not None:
                _fail(future, failed(request.error, "a read failed"))
            return
        try:
            then()
        except Exception as exc:
            _fail(future, exc)
            _abort(request.transaction)

    _on(request, event, "onsuccess", "onerror")


class _Events:
    """One handler for every IndexedDB event the store waits for. A proxy made and destroyed
    for each request cost 50-100 us (measured in Chromium's runtime worker), as much as a
    quick read: instead each waited-for request or transaction carries a number, and the one
    handler finds its callback by it."""

    def __init__(self) -> None:
        self.waiting: dict[int, Callable[[Any], None]] = {}
        self.last = 0
        self.handler = create_proxy(self.dispatch)

    def on(self, target: Any, callback: Callable[[Any], None], names: tuple[str, ...]) -> None:
        self.last += 1
        target.valorWaiting = self.last
        self.waiting[self.last] = callback
        for name in names:
            setattr(target, name, self.handler)

    def dispatch(self, event: Any) -> None:
        # One of a target's events ends the wait: success or error, complete or abort.
        callback = self.waiting.pop(event.target.valorWaiting, None)
        if callback is not None:
            callback(event)


_events: _Events | None = None


def _on(target: Any, callback: Callable[[Any], None], *names: str) -> None:
    """Call ``callback(event)`` on the first of ``target``'s events ``names`` (``onsuccess``,
    ``oncomplete``, ...)."""
    global _events
    if _events is None:
        _events = _Events()
    _events.on(target, callback, names)


def _abort(transaction: Any) -> None:
    with contextlib.suppress(JsException):  # already finished or aborted
        transaction.abort()


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


_arrays: dict[tuple[str, ...], Any] = {}
_from_entries: Any = None


def _js_array(names: tuple[str, ...]) -> Any:
    """The JS array of ``names``, made once."""
    array = _arrays.get(names)
    if array is None:
        array = _arrays[names] = to_js(list(names))
    return array


def _key(namespace: str, key: str) -> Any:
    return _key_of(namespace, key.encode())


def _key_of(namespace: str, key: bytes | list[Any]) -> Any:
    return to_js([namespace, key])


def _after_prefix(prefix: bytes) -> bytes | list[Any]:
    """The least key above every key starting with ``prefix`` (UTF-8 has no 0xFF byte to carry
    over); an empty array, above every binary key, for the empty prefix."""
    if not prefix:
        return []
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _value(record: Record) -> Any:
    global _from_entries
    if _from_entries is None:
        import js

        _from_entries = js.Object.fromEntries
    # An entry that never expires has ``e`` undefined, which is not a key: it is left out of
    # the expiry index.
    value = {"k": record.key, "v": record.value, "n": record.version, "e": record.expires_at}
    return to_js(value, dict_converter=_from_entries)


def _record(value: Any, now: float) -> Record | None:
    if value is None:
        return None
    expires_at = value.e
    if expires_at is not None and expires_at <= now:
        return None
    return Record(value.k, value.v.to_bytes(), int(value.n), expires_at)
