"""The browser's store: IndexedDB, reached from the runtime worker (Pyodide).

One database per site (origin and base), so every tab's runtime shares it, and it outlasts
reloads and offline visits. Entries live in ``entries`` under one binary key: the namespace in
UTF-8, a 0xFF byte (which UTF-8 never holds: the namespace ends there), then the key in UTF-8.
Binary keys compare bytewise, which is the store's code-point order (IndexedDB compares
strings by UTF-16 code units, which puts U+10000 and above before U+E000..U+FFFF). Version 1
of the database keyed entries ``[namespace, key as UTF-8 bytes]``, which cost each request
about 10 us more in Chromium's runtime worker; opening it moves them to their keys.

A commit is one read-write transaction: it reads what its checks and increments need, then
writes, all from the transaction's own event handlers. IndexedDB commits a transaction once
control returns to the event loop with no request pending, and Pyodide's event loop resumes a
coroutine in a later task: awaiting between two requests would let the transaction commit in
between. Read-write transactions over the same stores run one after another, across
connections and tabs, so a commit's reads and writes are atomic.

Versions come from a clock of this connection's own (a hybrid logical clock), not from a
counter in the database, so a plain write is one request: a version is ``tick * TABS +
connection``, where ``tick`` is the wall clock in microseconds, raised above every tick this
connection has handed out or read (and, in a commit that reads entries, above theirs), and
``connection`` is this connection's number, one of ``TABS`` handed out in turn (``meta``'s
``connections`` counter, taken by its first write). So versions never repeat across tabs,
grow with each write of one tab, and grow for a key whenever the writer checked or read it;
plain writes of one key from two tabs follow the clock (Python's here: milliseconds).

Speed (issue 22): every crossing between Python and JavaScript costs (a call, an attribute, a
converted value, above all a proxy made for a callback), and a plain JavaScript get costs
about 0.4 ms here. So ``get`` and ``commit`` go through a small JavaScript helper
(``_HELPER``, transport only): one call starts the whole transaction, and it calls back into
Python through proxies made once: ``plan`` (in the transaction, once the reads are done: the
checks, the version and the values to write are computed in Python, which writes them through
the helper) and ``done``/``failed`` (the outcome). A batch that reads nothing is planned before
the call, and its one write (store.set, store.delete) goes with the call. A get or a commit
calls ``transaction.commit()`` once its requests are made, and the waiting task (awaiting a
plain asyncio future) resumes inside the event that answers it (``_answer``), not in a later
browser task.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .backend import Check, Commit, Mutation, Record, planned_writes
from .codec import decode
from .errors import NotAnInteger, StoreFull, StoreUnavailable
from .limits import MAX_VALUE_BYTES

try:
    from pyodide.ffi import JsException, create_proxy, to_js
except ImportError:  # CPython: importable for tools; only Pyodide runs it
    JsException = Exception  # type: ignore[assignment,misc]

    def create_proxy(value: Any) -> Any:
        raise RuntimeError("the IndexedDB store runs inside Pyodide only")

    to_js = create_proxy

DATABASE_VERSION = 2
ENTRIES = "entries"
META = "meta"
EXPIRY_INDEX = "expiry"
TABS = 10_000
"""Connections told apart by a version's last four digits; with microseconds since the epoch
in front, versions keep to the store's 20 digits until the year 2286."""
SWEEP_EVERY = 60.0
"""Seconds between two clean-ups of expired entries (done inside a commit's transaction)."""
SWEEP_BATCH = 100
"""Expired entries removed by one clean-up at most, so a commit never waits long for it."""
LIST_BATCH_MIN = 16
READ_BUFFER = MAX_VALUE_BYTES
"""Bytes of the buffer a read's value is copied into: any value the store takes fits."""
HANDLERS = ("onupgradeneeded", "onblocked", "onsuccess", "onerror")
READ = (ENTRIES,)


# The helper: transport only. An entry is ``{k: key, v: value (Uint8Array), n: tick, c:
# connection, e: expires_at}`` (``c`` undefined in entries written before versions came from
# clocks: ``n`` was the version). Values cross in Python's buffer: given by their length, their
# bytes in the buffer (the value itself when it does not fit). ``get`` reads one entry and
# calls ``done(id, value, tick, connection, expires)``. ``commit`` writes the one entry given
# with the call (``name``; ``value`` undefined: removed), or else reads the entries named (keys
# joined by NUL, which no key holds) and calls ``plan(id, found)`` in the transaction
# (``found``: value, tick, connection, expires for each name, in order, the values one after
# another in the buffer; right away when nothing is read), which writes through ``put`` (its
# value at the buffer's start) and ``remove`` and answers 1 (written), 0 (nothing written) or
# -1 (abort).
# Then it removes up to ``sweep`` expired entries, and calls ``done(id)`` once the transaction
# has committed. ``connection`` takes the next connection number. Failures call
# ``failed(id, name, message)``.
_HELPER = """(done, plan, failed, buffer, module) => {
  const encoder = new TextEncoder();
  // A read's value is copied into Python's buffer (a bytearray, held exported so it never
  // moves) rather than handed over as a Uint8Array: no proxy made, no call back into
  // JavaScript for its bytes. The heap's view is looked up each time: it is new after the
  // memory grows.
  const exported = buffer.getBuffer("u8");
  const address = exported.data.byteOffset;
  let capacity = exported.data.length;
  // A namespace's keys start with its name in UTF-8 and a 0xFF byte.
  const prefixes = new Map();
  const prefix = (namespace) => {
    let made = prefixes.get(namespace);
    if (made === undefined) {
      const name = encoder.encode(namespace);
      made = new Uint8Array(name.length + 1);
      made.set(name);
      made[name.length] = 0xff;
      prefixes.set(namespace, made);
    }
    return made;
  };
  const joined = (start, rest) => {
    const made = new Uint8Array(start.length + rest.length);
    made.set(start);
    made.set(rest, start.length);
    return made;
  };
  // The keys read lately, made once: encoding a name makes an ArrayBuffer, which costs as
  // much as a quick read's other JavaScript (IndexedDB copies a key, so one can be reused).
  const keys = new Map();
  const key = (namespace, name) => {
    let named = keys.get(namespace);
    if (named === undefined) keys.set(namespace, (named = new Map()));
    let made = named.get(name);
    if (made === undefined) {
      if (named.size >= 256) named.clear();
      named.set(name, (made = joined(prefix(namespace), encoder.encode(name))));
    }
    return made;
  };
  // A value to write, given by its length: its bytes, copied out of the buffer's start (a
  // copy of its own: a view of the heap would have IndexedDB keep the whole heap).
  const given = (value) =>
    typeof value === "number" ? module.HEAPU8.slice(address, address + value) : value;
  const refuse = (id, error, what) =>
    failed(id, error ? error.name : "", error ? error.message : what);
  let writing = null;  // the entries store and namespace of the commit being planned
  return {
    get(db, namespace, name, id) {
      const transaction = db.transaction("entries", "readonly");
      const request = transaction.objectStore("entries").get(key(namespace, name));
      // Its one request made: committed once it is done, rather than once the answer's event
      // has run and come back (a read 10-25 us quicker in Chromium's runtime worker).
      if (transaction.commit) transaction.commit();
      request.onsuccess = () => {
        const value = request.result;
        if (value === undefined) return done(id);
        const bytes = value.v;
        if (bytes.length > capacity) return done(id, bytes, value.n, value.c, value.e);
        module.HEAPU8.set(bytes, address);
        done(id, bytes.length, value.n, value.c, value.e);
      };
      request.onerror = () => refuse(id, request.error, "a read failed");
    },
    commit(db, namespace, id, names, now, sweep, name, value, tick, connection, expires) {
      const transaction = db.transaction("entries", "readwrite");
      const entries = transaction.objectStore("entries");
      transaction.oncomplete = () => done(id);
      transaction.onabort = () => refuse(id, transaction.error, "the transaction was aborted");
      // Once every request is made, commit without waiting for their results to come back
      // first (IndexedDB's own auto-commit waits for them: one more round of messages). A
      // clean-up's requests come later: IndexedDB commits once they are done.
      const written = () => {
        if (sweep > 0) {
          const expired = entries.index("expiry").getAllKeys(IDBKeyRange.upperBound(now), sweep);
          expired.onsuccess = () => { for (const k of expired.result) entries.delete(k); };
        } else if (transaction.commit) {
          transaction.commit();
        }
      };
      const write = (found) => {
        writing = [entries, namespace];
        let outcome;
        try {
          outcome = plan(id, found);
        } finally {
          writing = null;
        }
        if (outcome < 0) transaction.abort();
        else if (outcome > 0) written();
        else if (transaction.commit) transaction.commit();
      };
      if (name !== undefined) {  // the one write, planned before the call
        if (value === undefined) entries.delete(key(namespace, name));
        else entries.put({k: name, v: given(value), n: tick, c: connection, e: expires},
                         key(namespace, name));
        written();
      } else if (!names) {
        write([]);
      } else {
        const reads = names.split("\\0");
        for (let i = 0; i < reads.length; i++) reads[i] = entries.get(key(namespace, reads[i]));
        // Requests succeed in the order they were made: once the last one has, all have.
        reads[reads.length - 1].onsuccess = () => {
          const found = [];
          let offset = 0;
          for (const read of reads) {
            const value = read.result;
            if (value === undefined) {
              found.push(undefined, 0, undefined, undefined);
              continue;
            }
            const bytes = value.v;
            if (offset + bytes.length <= capacity) {
              module.HEAPU8.set(bytes, address + offset);
              offset += bytes.length;
              found.push(bytes.length, value.n, value.c, value.e);
            } else {
              found.push(bytes, value.n, value.c, value.e);
            }
          }
          write(found);
        };
      }
    },
    put(name, value, tick, connection, expires) {
      // An entry that never expires has ``e`` undefined, which is not a key: it is left out
      // of the expiry index.
      writing[0].put({k: name, v: given(value), n: tick, c: connection, e: expires},
                     key(writing[1], name));
    },
    remove(name) {
      writing[0].delete(key(writing[1], name));
    },
    prefix,
    upgrade(transaction) {
      // In version 1's upgrade to 2: each entry keyed [namespace, key] moves to its key. The
      // binary keys come before every array key, so the cursor does not meet them again.
      const entries = transaction.objectStore("entries");
      const cursor = entries.openCursor();
      cursor.onsuccess = () => {
        const at = cursor.result;
        if (at === null) return;
        if (Array.isArray(at.key)) {
          entries.put(at.value, joined(prefix(at.key[0]), new Uint8Array(at.key[1])));
          at.delete();
        }
        at.continue();
      };
    },
    release() {
      capacity = -1;  // a read answering later must not write into memory given back
      exported.release();
    },
    connection(db) {
      return new Promise((resolve, reject) => {
        const transaction = db.transaction("meta", "readwrite");
        const meta = transaction.objectStore("meta");
        const request = meta.get("connections");
        let number = 0;
        request.onsuccess = () => {
          number = ((request.result ?? 0) + 1) % %(tabs)d;
          meta.put(number, "connections");
        };
        transaction.oncomplete = () => resolve(number);
        transaction.onabort = () => reject(transaction.error);
      });
    },
  };
}""".replace("%(tabs)d", str(TABS))


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
        self._helper: _Helper | None = None
        self._prefixes: dict[str, bytes] = {}  # the first bytes of each namespace's keys
        self._proxies: list[Any] = []
        self._buffer = memoryview(b"")  # where the helper copies a read's value
        self._waiting: dict[int, _Read | _Planned] = {}  # operations under way, by number
        self._last = 0
        self._connection = -1  # this connection's number, a version's last digits
        self._seen = 0  # the greatest version this backend handed out or read

    # -- the protocol ---------------------------------------------------------------------------

    def get(self, namespace: str, key: str, now: float) -> Awaitable[Record | None]:
        return self.get_value(namespace, key, now, decoded=False)

    def get_value(
        self, namespace: str, key: str, now: float, *, decoded: bool = True
    ) -> Awaitable[Any]:
        """``key``'s value decoded (``Store.get``), or None; its ``Record`` when not
        ``decoded`` (``get``). The value is decoded in the event that answers the read: no
        record made, no step of the caller's left to decode it once resumed.

        Not a coroutine: with the database open, the caller awaits the answer itself (one
        frame less to make, resume and unwind, a measurable share of a quick read)."""
        db = self._db
        if db is None:
            return self._get_opening(namespace, key, now, decoded)
        self._last = number = self._last + 1
        future: asyncio.Future[Any] = asyncio.Future()
        self._waiting[number] = (future, key, now, decoded)
        try:
            (self._helper or self._js()).get(db, namespace, key, number)
        except JsException as exc:
            self._lost(db, number, exc)
        return future

    async def _get_opening(self, namespace: str, key: str, now: float, decoded: bool) -> Any:
        await self._database()
        return await self.get_value(namespace, key, now, decoded=decoded)

    async def list(
        self, namespace: str, prefix: str, start_after: str | None, limit: int, now: float
    ) -> list[Record]:
        db = await self._database()
        listed: asyncio.Future[list[Record]] = asyncio.get_running_loop().create_future()
        import js

        first = self._prefixes.get(namespace)
        if first is None:
            first = self._prefixes[namespace] = self._js().prefix(namespace).to_bytes()
        if start_after is not None and start_after >= prefix:
            lower, lower_open = start_after.encode(), True
        else:
            lower, lower_open = prefix.encode(), False
        upper = to_js(first + _after_prefix(prefix.encode()))
        found: list[Record] = []

        def read(transaction: Any) -> None:
            store = transaction.objectStore(ENTRIES)

            def batch(lower: bytes, lower_open: bool) -> None:
                keys = js.IDBKeyRange.bound(to_js(first + lower), upper, lower_open, True)
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
                            if record.version > self._seen:
                                self._seen = record.version
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

    def commit(
        self, namespace: str, checks: Sequence[Check], mutations: Sequence[Mutation], now: float
    ) -> Awaitable[Commit]:
        # Not a coroutine once the database is open and this connection has its number: the
        # caller awaits the answer itself, as a get's.
        db = self._db
        if db is None or self._connection < 0 or not (checks or mutations):
            return self._commit_opening(namespace, checks, mutations, now)
        return self._start(db, namespace, checks, mutations, now)

    async def _commit_opening(
        self, namespace: str, checks: Sequence[Check], mutations: Sequence[Mutation], now: float
    ) -> Commit:
        if not checks and not mutations:
            return Commit(True)
        db = self._db if self._db is not None else await self._database()
        while self._connection < 0:
            await self._number(db)
            db = self._db if self._db is not None else await self._database()
        return await self._start(db, namespace, checks, mutations, now)

    def _start(
        self,
        db: Any,
        namespace: str,
        checks: Sequence[Check],
        mutations: Sequence[Mutation],
        now: float,
    ) -> asyncio.Future[Commit]:
        """Start a commit's transaction; what it awaits."""
        sweep = 0
        if mutations and now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY
            sweep = SWEEP_BATCH
        planned = _Planned(checks, mutations, now, self._version)
        self._last = number = self._last + 1
        self._waiting[number] = planned
        given: tuple[Any, ...] = ()
        if not planned.names:
            # Nothing to read (no checks, no increments): planned now, and one write
            # (store.set, store.delete) goes with the call instead of through a call back.
            written = planned.blind()
            if len(written) == 1:
                ((key, record),) = written.items()
                if record is None:
                    given = (key, None)
                else:
                    tick, connection = divmod(record.version, TABS)
                    value = _handed(record.value, self._buffer)
                    given = (key, value, tick, connection, record.expires_at)
        try:
            (self._helper or self._js()).commit(
                db, namespace, number, planned.names, now, sweep, *given
            )
        except JsException as exc:
            self._lost(db, number, exc)
        return planned.future

    def _version(self, floor: int = 0) -> int:
        """A new version: greater than ``floor`` and than every version this backend handed
        out or read, and above the wall clock's microsecond; its last digits are this
        connection's number."""
        if self._connection < 0:  # opened again meanwhile (after a ``versionchange``)
            raise StoreUnavailable(self.description, "the database was opened again: try again")
        seen = self._seen if self._seen > floor else floor
        tick = int(time.time() * 1_000_000)
        if tick <= seen // TABS:
            tick = seen // TABS + 1
        self._seen = version = tick * TABS + self._connection
        return version

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._helper is not None:
            self._helper.release()
        for proxy in self._proxies:
            proxy.destroy()
        self._proxies.clear()
        self._helper = None
        self._buffer = memoryview(b"")

    # -- the JavaScript helper's side ---------------------------------------------------------

    def _js(self) -> _Helper:
        if self._helper is None:
            import pyodide_js
            from pyodide.code import run_js

            self._proxies = [create_proxy(f) for f in (self._done, self._plan, self._failed)]
            self._buffer = memoryview(bytearray(READ_BUFFER))
            self._helper = _Helper(
                run_js(_HELPER)(*self._proxies, self._buffer.obj, pyodide_js._module)
            )
        return self._helper

    def _lost(self, db: Any, number: int, exc: JsException) -> None:
        """The helper could not start a transaction: the connection is closing or closed."""
        del self._waiting[number]
        if self._db is db:
            self._db = None  # the next operation opens it again
        raise StoreUnavailable(self.description, f"no transaction: {exc}") from None

    def _done(
        self,
        number: int,
        value: Any = None,
        tick: int = 0,
        connection: int | None = None,
        expires: float | None = None,
    ) -> None:
        operation = self._waiting.pop(number, None)
        if type(operation) is tuple:
            future, key, now, decoded = operation
            if value is None or (expires is not None and expires <= now):
                _answer(future, None)
                return
            version = tick if connection is None else tick * TABS + connection
            if version > self._seen:
                self._seen = version
            # The value's length when the helper copied it into the buffer (decoded from there,
            # no copy first), else its bytes.
            data = self._buffer[:value] if type(value) is int else value.to_bytes()
            if not decoded:
                _answer(future, Record(key, bytes(data), version, expires))
                return
            try:
                result = decode(data)
            except Exception as exc:  # not a value the codec wrote: the reader hears of it
                _answer(future, None, exc)
                return
            _answer(future, result)
        elif operation is not None:
            _answer(operation.future, operation.commit, operation.failure)

    def _plan(self, number: int, found: Any) -> int:
        planned = self._waiting.get(number)
        if not isinstance(planned, _Planned):
            return -1
        return planned.plan(self._js(), found, self._buffer)

    def _failed(self, number: int, name: str, message: str) -> None:
        operation = self._waiting.pop(number, None)
        if operation is None:
            return
        if type(operation) is tuple:
            _answer(operation[0], None, self._refused(name, message, "a read failed"))
        elif operation.failure is not None:  # the plan's own error aborted it
            _answer(operation.future, None, operation.failure)
        else:
            failure = self._refused(name, message, "the transaction was aborted")
            _answer(operation.future, None, failure)

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
                if event.oldVersion < 1:
                    db = request.result
                    entries = db.createObjectStore(ENTRIES)
                    entries.createIndex(EXPIRY_INDEX, "e")
                    db.createObjectStore(META)
                else:  # version 1's entries: moved to their keys (in this transaction)
                    self._js().upgrade(request.transaction)
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
        self._connection = -1  # taken by the first write (a read-only tab writes nothing)
        self._db = db
        return db

    async def _number(self, db: Any) -> None:
        """Take this connection's number: what its versions end with."""
        try:
            number = await self._js().connection(db)
        except JsException as exc:
            name, message = getattr(exc, "name", None), getattr(exc, "message", str(exc))
            raise self._refused(name, message, "no connection number") from None
        if self._db is db:
            self._connection = int(number)

    def _transaction(
        self,
        db: Any,
        stores: tuple[str, ...],
        mode: str,
        start: Callable[[Any], None],
        future: asyncio.Future[Any],
    ) -> None:
        """Run ``start(transaction)`` in a new transaction (``list``'s reads, whose requests
        settle ``future`` themselves)."""
        try:
            transaction = db.transaction(_js_array(stores), mode)
        except JsException as exc:
            if self._db is db:
                self._db = None  # closing or closed: the next operation opens it again
            raise StoreUnavailable(self.description, f"no transaction: {exc}") from None
        try:
            start(transaction)
        except Exception as exc:
            _fail(future, exc)
            _abort(transaction)

    def _unavailable(self, error: Any, what: str) -> StoreUnavailable:
        name = getattr(error, "name", None) if error is not None else None
        message = getattr(error, "message", "") if error is not None else ""
        return self._refused(name, message, what)

    def _refused(self, name: str | None, message: str, what: str) -> StoreUnavailable:
        reason = f"{what}: {name}: {message}" if name else what
        if name == "QuotaExceededError":
            return StoreFull(self.description, f"the browser's storage quota is used up ({reason})")
        return StoreUnavailable(self.description, reason)


class _Helper:
    """The JavaScript helper's functions, each looked up once (every lookup is a crossing)."""

    def __init__(self, helper: Any) -> None:
        self.prefix = helper.prefix
        self.upgrade = helper.upgrade
        self.get = helper.get
        self.commit = helper.commit
        self.put = helper.put
        self.remove = helper.remove
        self.connection = helper.connection
        self.release = helper.release


def _answer(
    future: asyncio.Future[Any], result: Any, exception: BaseException | None = None
) -> None:
    """Settle ``future``, what a store operation awaits, with ``result`` (or ``exception``) and
    run its waiting task's step now, inside the IndexedDB event that answers it.

    Settled the usual way, a future wakes its task through ``loop.call_soon``, which in
    Pyodide's loop makes a proxy and waits for another browser task: 0.3-0.5 ms in Chromium's
    runtime worker on this machine, as much as the IndexedDB read itself. The event handler is
    a browser task of its own with no Python task running, so the waiting task's step can run
    right there, as a JavaScript ``await`` resumes in the same task. (If a task is running
    after all, say one waiting through JSPI, the wake-up goes through ``call_soon`` as
    usual.)

    A plain asyncio future (the C one), not a subclass: a task awaiting it, registering its
    wake-up and reading its result take the C task's own shortcuts, where a subclass's go
    through attribute lookups and method calls (a read 15-30 us quicker in Chromium's runtime
    worker, same-run A/B)."""
    if future.done():  # cancelled meanwhile: its waiter has gone (a commit may commit)
        return
    callbacks = future._callbacks  # type: ignore[attr-defined]
    if callbacks and asyncio.current_task(future.get_loop()) is None:
        # Settled, the future would hand these to ``call_soon``: taken off, run here.
        for callback, _ in callbacks:
            future.remove_done_callback(callback)
    else:
        callbacks = None
    if exception is None:
        future.set_result(result)
    else:
        future.set_exception(exception)
    if callbacks:
        for callback, context in callbacks:
            context.run(callback, future)


_Read = tuple[asyncio.Future[Any], str, float, bool]
"""A ``get`` under way: what it answers, which key, the clock that decides expiry, and whether
it answers the decoded value or the record (a tuple: made and read quicker than an object)."""


class _Planned:
    """One commit under way: the keys whose entries it reads (checks, increments), then, in
    its transaction, ``plan`` decides and writes (``version(floor)`` gives its version); its
    ``commit`` (or ``failure``) answers ``future`` once the transaction has committed."""

    __slots__ = (
        "checks",
        "commit",
        "failure",
        "future",
        "keys",
        "mutations",
        "names",
        "now",
        "version",
        "written",
    )

    def __init__(
        self,
        checks: Sequence[Check],
        mutations: Sequence[Mutation],
        now: float,
        version: Callable[[int], int],
    ) -> None:
        self.future: asyncio.Future[Commit] = asyncio.Future()
        self.checks = checks
        self.mutations = mutations
        self.now = now
        self.version = version
        needed = [check.key for check in checks]
        needed += [m.key for m in mutations if m.kind == "increment"]
        self.keys = list(dict.fromkeys(needed))
        self.names = "\0".join(self.keys)
        self.commit = Commit(True)
        self.failure: Exception | None = None
        self.written: dict[str, Record | None] = {}

    def blind(self) -> dict[str, Record | None]:
        """The writes of a batch that reads nothing, planned before its transaction."""
        version = self.version(0)
        self.written, sums = planned_writes(self.mutations, _nothing, version)
        self.commit = Commit(True, version, sums)
        return self.written

    def plan(self, helper: _Helper, found: Any, buffer: memoryview) -> int:
        """Check, compute and write (through ``helper``, the values crossing in ``buffer``): 1
        when written, 0 when nothing is to be written, -1 to abort (``failure`` says why)."""
        try:
            if not self.keys:
                self._write(helper, self.written, buffer)
                return 1
            current, newest = self._current(found, buffer)
            for check in self.checks:
                record = current[check.key]
                if (record.version if record is not None else None) != check.version:
                    self.commit = Commit(False)
                    return 0
            if not self.mutations:
                return 0
            version = self.version(newest)
            try:
                written, sums = planned_writes(self.mutations, current.get, version)
            except NotAnInteger as exc:
                self.failure = exc  # nothing written; raised once the transaction ends
                return 0
            self._write(helper, written, buffer)
            self.commit = Commit(True, version, sums)
            return 1
        except Exception as exc:
            self.failure = exc
            return -1

    @staticmethod
    def _write(helper: _Helper, written: dict[str, Record | None], buffer: memoryview) -> None:
        for key, record in written.items():
            if record is None:
                helper.remove(key)
            else:
                tick, connection = divmod(record.version, TABS)
                value = _handed(record.value, buffer)
                helper.put(key, value, tick, connection, record.expires_at)

    def _current(self, found: Any, buffer: memoryview) -> tuple[dict[str, Record | None], int]:
        """The live entries read, and the greatest version read (of any entry)."""
        values = found.to_py(depth=1)  # the list only: a value too big stays a Uint8Array
        current: dict[str, Record | None] = {}
        newest = 0
        offset = 0  # where the next value's bytes are in the buffer
        for index, key in enumerate(self.keys):
            value, tick, connection, expires = values[4 * index : 4 * index + 4]
            version = tick if connection is None else tick * TABS + connection
            newest = max(newest, version)
            if value is None or (expires is not None and expires <= self.now):
                current[key] = None
            elif type(value) is int:  # its length, its bytes the next in the buffer
                current[key] = Record(
                    key, buffer[offset : offset + value].tobytes(), version, expires
                )
            else:
                current[key] = Record(key, value.to_bytes(), version, expires)
            if type(value) is int:
                offset += value
        return current, newest


def _nothing(key: str) -> None:
    return None


def _handed(value: bytes, buffer: memoryview) -> Any:
    """``value`` for the helper to write: copied to the buffer's start and given by its length
    (no ``to_js``, no Uint8Array made from Python), or itself when it does not fit."""
    size = len(value)
    if size > len(buffer):
        return to_js(value)
    buffer[:size] = value
    return size


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


def _js_array(names: tuple[str, ...]) -> Any:
    """The JS array of ``names``, made once."""
    array = _arrays.get(names)
    if array is None:
        array = _arrays[names] = to_js(list(names))
    return array


def _after_prefix(prefix: bytes) -> bytes:
    """The least key (after a namespace's first bytes) above every key starting with
    ``prefix``: UTF-8 has no 0xFF byte, so nothing carries over, and 0xFF alone is above
    every key for the empty prefix."""
    if not prefix:
        return b"\xff"
    return prefix[:-1] + bytes([prefix[-1] + 1])


def _record(value: Any, now: float) -> Record | None:
    if value is None:
        return None
    expires_at = value.e
    if expires_at is not None and expires_at <= now:
        return None
    tick, connection = value.n, getattr(value, "c", None)  # no ``c``: an older entry
    version = tick if connection is None else tick * TABS + connection
    return Record(value.k, value.v.to_bytes(), version, expires_at)
