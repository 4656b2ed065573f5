"""The SQLite backend, the server's default: one file, WAL mode, shared by every worker
process on the machine.

Where the work is done, and why the event loop does not wait:

- **Short commits, on the event loop's thread, together.** A commit of a few small mutations
  joins the loop's batch; once the tasks ready now have run, the batch is committed in one
  transaction on the loop's own connection if that can be done at once: the processes' write
  turn (an ``flock``) and SQLite's write lock both taken without waiting. In WAL mode with
  ``synchronous = NORMAL`` a commit appends its pages to the WAL file and returns: a
  ``write()`` into the OS's page cache, no ``fsync`` (the kernel writes the pages out later;
  a process killed after the commit loses nothing, a power cut may lose the last commits).
- **The writer's thread** takes the commits the loop cannot make at once (another process
  has the turn, a large commit, the loop's connection not opened yet or failing) and those
  that come while it has some queued; it waits for the turn there (a write blocked longer
  than ``BUSY_TIMEOUT_MS`` fails: 503) and commits everything queued in one transaction.
- **The maintainer's thread** is the only place the disk is synced: no connection
  checkpoints by itself; every ``MAINTAIN_EVERY`` transactions that thread checkpoints the
  WAL into the database file while the commits go on, then, in one turn, what came
  meanwhile, and makes the first write after it (the one that starts the WAL over and syncs
  its header), removing expired entries.
- **Reads**: ``get`` (one entry, at most 64 KiB) on the loop's connection, from the WAL
  snapshot of the moment: a WAL reader does not wait for writers. SQLite can answer "busy"
  only while a connection rebuilds the WAL's index (after a crash); the read then goes to the
  reader's thread, as ``list`` always does (a page can be a thousand entries of 64 KiB).

What the loop's thread still does is read the pages it needs, from SQLite's cache or the OS's
(the disk only for a part of the file the OS has not cached yet), and, in a race with a
writer changing the WAL's index, retry for some microseconds inside SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .backend import Check, Commit, Mutation, Record
from .codec import incremented
from .errors import StoreError, StoreFull, StoreUnavailable

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another process's write to finish before it fails (503)."""
LOOP_MAX_OPERATIONS = 8
LOOP_MAX_BYTES = 16 * 1024
"""A commit of at most this many checks and mutations, and values of at most this many bytes
together, is made on the event loop's thread; a larger one goes to the writer's thread."""
LOOP_MAX_BATCH = 32
"""At most this many commits in one transaction on the event loop's thread."""
MAINTAIN_EVERY = 1000
"""Every ``MAINTAIN_EVERY`` transactions a process makes, its maintainer's thread checkpoints
the WAL and removes up to ``CLEANUP_BATCH`` expired entries (they are invisible already: this
only gives their space back). Counted in transactions, not commits: a transaction writes about
3 pages whatever its number of commits, so the WAL grows by some 12 MB per process between
checkpoints (SQLite's own default is every 1000 pages). Few: a checkpoint's last part holds
the write turn of every process, and costs its three syncs more than its pages."""
CLEANUP_BATCH = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_expiry ON entries (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER);
INSERT OR IGNORE INTO counter VALUES (1, 0);
"""
_LIVE = "(expires_at IS NULL OR expires_at > ?)"
_GET = f"SELECT value, version, expires_at FROM entries WHERE namespace = ? AND key = ? AND {_LIVE}"
_UPSERT = (
    "INSERT INTO entries (namespace, key, value, version, expires_at) VALUES (?, ?, ?, ?, {}) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
    "version = excluded.version, expires_at = excluded.expires_at"
)
_PUT = _UPSERT.format("?")
_PUT_LASTING = _UPSERT.format("NULL")
_DELETE = "DELETE FROM entries WHERE namespace = ? AND key = ?"
# Two statements, not one with RETURNING: SQLite keeps returned rows in a temporary b-tree
# it opens, zeroes pages for and closes each time, more work than a second statement.
_TAKE_VERSIONS = "UPDATE counter SET version = version + ? WHERE id = 1"
_LAST_VERSION = "SELECT version FROM counter WHERE id = 1"


def connect(
    path: str | Path, busy_timeout_ms: int | None = None, *, check_same_thread: bool = True
) -> sqlite3.Connection:
    """A connection with the store's settings: WAL, synchronous NORMAL (a commit survives
    the process being killed; the last ones may not survive power loss), a busy timeout
    (``BUSY_TIMEOUT_MS`` unless given), and transactions begun explicitly."""
    if busy_timeout_ms is None:
        busy_timeout_ms = BUSY_TIMEOUT_MS
    connection = sqlite3.connect(
        path,
        timeout=busy_timeout_ms / 1000,
        isolation_level=None,
        check_same_thread=check_same_thread,
    )
    try:
        connection.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        connection.close()
        raise
    return connection


class _Connection:
    """One connection, used only from its own thread."""

    def __init__(self, path: Path, setup: Callable[[sqlite3.Connection], None]) -> None:
        self.path = path
        self.setup = setup
        self.connection: sqlite3.Connection | None = None
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="valor-store-sqlite")

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._run, work)

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self.connection is None:
            self.connection = self._open()
        try:
            return work(self.connection)
        except sqlite3.Error:
            # Start again from a new connection next time (the file may be back, or writable).
            self._drop()
            raise

    def _open(self) -> sqlite3.Connection:
        # Processes opening a new file at once (`valor serve --workers 4`'s first requests)
        # race to switch it to WAL and create the schema, and SQLite may say busy at once,
        # without its busy timeout, where waiting could deadlock: one POST in a thousand was
        # answered 503. Opening is tried again until the timeout; nothing is written before.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        while True:
            connection = None
            try:
                connection = connect(self.path)
                self.setup(connection)
                return connection
            except sqlite3.OperationalError as exc:
                if connection is not None:
                    connection.close()
                if not _busy(exc) or time.monotonic() >= deadline:
                    raise
            except BaseException:
                if connection is not None:
                    connection.close()
                raise
            time.sleep(0.005)

    def _drop(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            try:
                if connection.in_transaction:
                    connection.rollback()
            except sqlite3.Error:
                pass
            connection.close()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._drop)
        self.executor.shutdown(wait=False)


class WriteTurn:
    """The processes' turns to write, as an exclusive ``flock`` on a file beside the
    database. SQLite's own busy handler polls, sleeping up to 100 ms between tries, so
    several busy workers lost most of their time asleep; a waiter on ``flock`` is woken the
    moment the lock is free (and the kernel frees it when its holder dies).

    Each ``WriteTurn`` opens the file itself: ``flock`` locks belong to an open file, so two
    of them in one process (the event loop's and the writer thread's) exclude each other as
    two processes do."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        fcntl.flock(self.open(), fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def try_enter(self) -> bool:
        """Take the turn if no one has it (then leave it with ``__exit__``); never waits."""
        try:
            fcntl.flock(self.open(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def open(self) -> int:
        """The lock file's descriptor, opened once."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class _LoopConnection:
    """The event loop's own connection (``SqliteBackend``'s short commits and ``get``).
    Opened by the writer's thread, so that not even the file's opening is done on the loop,
    then used by the loop's thread only. No busy timeout: where it would have to wait, it
    says so (None) and the caller hands the work to a thread."""

    def __init__(self, path: Path, turn: WriteTurn, thread: int) -> None:
        self.connection = connect(path, 0, check_same_thread=False)
        self.cursor = self.connection.cursor()  # one for every statement: no cursor each
        self.turn = turn
        self.thread = thread
        try:
            _no_autocheckpoint(self.connection)
            turn.open()
        except BaseException:
            self.close()
            raise

    def try_write(self, queued: Sequence[_Queued]) -> list[Commit | BaseException] | None:
        """The commits made in one transaction, or None if that cannot be done without
        waiting (another writer has the turn, or SQLite's lock: a program writing without
        the turn, such as the ``sqlite3`` shell). SQLite's errors are raised."""
        if not self.turn.try_enter():
            return None
        try:
            try:
                self.cursor.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    return None
                raise
            return _write_begun(self.cursor, queued)
        finally:
            self.turn.__exit__()

    def try_get(self, namespace: str, key: str, now: float) -> list[Any] | None:
        """The entry's rows (none or one), or None if SQLite says busy."""
        try:
            return self.cursor.execute(_GET, (namespace, key, now)).fetchall()
        except sqlite3.OperationalError as exc:
            if _busy(exc):
                return None
            raise

    def close(self) -> None:
        self.connection.close()
        self.turn.close()


class SqliteBackend:
    """Entries in a SQLite file; safe for several processes on one machine (not on a network
    file system, where WAL does not work)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.description = f"sqlite:///{self.path.as_posix()}"
        self._writer = _Connection(self.path, _create_schema)
        self._reader = _Connection(self.path, _no_autocheckpoint)
        # Checkpoints have their thread: the writer's goes on committing meanwhile.
        self._maintainer = _Connection(self.path, _no_autocheckpoint)
        self._pin: sqlite3.Connection | None = None  # the maintainer's thread's
        self._ready = False
        self._turn = WriteTurn(Path(f"{self.path}-lock"))
        self._maintainer_turn = WriteTurn(self._turn.path)
        self._queue: list[_Queued] = []  # commits waiting for the writer's thread
        self._queue_lock = threading.Lock()
        self._draining = False
        self._on_loop: _LoopConnection | None = None
        self._loop_thread: int | None = None  # the thread of the loop that commits first
        self._loop_batch: list[_Queued] = []  # commits waiting for the loop's next turn
        self._transactions = 0  # since the last maintenance
        self._maintaining = False
        self._now = 0.0  # the clock of the latest commit, for removing expired entries
        self._closed = False

    async def get(self, namespace: str, key: str, now: float) -> Record | None:
        on_loop = self._usable_on_loop()
        if on_loop is not None:
            try:
                rows = on_loop.try_get(namespace, key, now)
            except sqlite3.Error:
                self._drop_on_loop()  # the reader's thread reports it
                rows = None
            if rows is not None:
                return Record(key, *rows[0]) if rows else None

        def read(connection: sqlite3.Connection) -> Record | None:
            row = connection.execute(_GET, (namespace, key, now)).fetchone()
            return None if row is None else Record(key, row[0], row[1], row[2])

        return await self._read(read)

    async def list(
        self, namespace: str, prefix: str, start_after: str | None, limit: int, now: float
    ) -> list[Record]:
        start, inclusive = prefix, True
        if start_after is not None and start_after >= prefix:
            start, inclusive = start_after, False
        end = prefix_end(prefix)
        sql = (
            "SELECT key, value, version, expires_at FROM entries WHERE namespace = ? "
            f"AND key {'>=' if inclusive else '>'} ? "
            + ("AND key < ? " if end is not None else "")
            + f"AND {_LIVE} ORDER BY key LIMIT ?"
        )
        args: tuple[Any, ...] = (namespace, start, *((end,) if end is not None else ()), now, limit)

        def read(connection: sqlite3.Connection) -> list[Record]:
            return [Record(*row) for row in connection.execute(sql, args)]

        return await self._read(read)

    async def commit(
        self, namespace: str, checks: Sequence[Check], mutations: Sequence[Mutation], now: float
    ) -> Commit:
        future: asyncio.Future[Commit] = asyncio.get_running_loop().create_future()
        item = (namespace, checks, mutations, now, future)
        self._now = now
        on_loop = self._on_loop
        # Not while the writer's thread has commits queued: this one would overtake them,
        # and take the turn between its batches.
        if (
            on_loop is not None
            and not self._draining
            and on_loop.thread == threading.get_ident()
            and _short(checks, mutations)
        ):
            # Committed once the tasks ready now have run, with the commits they make.
            batch = self._loop_batch
            batch.append(item)
            if len(batch) == 1:
                future.get_loop().call_soon(self._commit_on_loop)
        else:
            if self._loop_thread is None:
                self._loop_thread = threading.get_ident()
            self._to_writer([item])
        return await future

    def _usable_on_loop(self) -> _LoopConnection | None:
        """The loop's connection, if this is its thread."""
        on_loop = self._on_loop
        if on_loop is None or on_loop.thread != threading.get_ident():
            return None
        return on_loop

    def _commit_on_loop(self) -> None:
        """On the loop's thread: the batch committed at once, or handed to the writer's
        thread."""
        batch = self._loop_batch
        if len(batch) > LOOP_MAX_BATCH:
            batch, self._loop_batch = batch[:LOOP_MAX_BATCH], batch[LOOP_MAX_BATCH:]
            batch[0][4].get_loop().call_soon(self._commit_on_loop)
        else:
            self._loop_batch = []
        on_loop = self._usable_on_loop()
        outcomes: list[Commit | BaseException] | None = None
        if on_loop is not None and not self._draining:
            try:
                outcomes = on_loop.try_write(batch)
            except (sqlite3.Error, OSError):
                # The writer's thread tries again and answers (503, 507); it opens a new
                # connection for the loop once it succeeds.
                self._drop_on_loop()
            except BaseException as exc:
                outcomes = [exc for _ in batch]
        if outcomes is None:
            self._to_writer(batch)
            return
        self._counted()
        for item, outcome in zip(batch, outcomes, strict=True):
            _settle(item[4], outcome)

    def _to_writer(self, items: list[_Queued]) -> None:
        if self._closed:  # a commit racing close(): its thread is gone
            closed = StoreUnavailable(self.description, "the store was closed")
            _settle_all([(item[4], closed) for item in items])
            return
        with self._queue_lock:
            self._queue += items
            start, self._draining = not self._draining, True
        if start:
            self._writer.executor.submit(self._drain)

    def _drain(self) -> None:
        """In the writer's thread: commit what is queued, many commits per transaction,
        until nothing is. Under load each process then takes its turn to write once for all
        its waiting commits, not once per commit."""
        while True:
            with self._queue_lock:
                queued, self._queue = self._queue, []
                if not queued:
                    self._draining = False
                    return
            outcomes: list[Commit | BaseException]
            try:
                outcomes = self._writer._run(functools.partial(self._write, queued=queued))
            except sqlite3.Error as exc:
                outcomes = [self._unavailable(exc) for _ in queued]
            except OSError as exc:  # the lock file beside it
                outcomes = [StoreUnavailable(self.description, str(exc)) for _ in queued]
            except BaseException as exc:
                outcomes = [exc for _ in queued]
            else:
                self._ready = True  # the schema is there
                self._counted()
                self._open_on_loop()
            # One wake-up of each event loop for the whole batch, not one per commit: each
            # is a write to the loop's self-pipe and a turn of the loop.
            answers: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
            for item, outcome in zip(queued, outcomes, strict=True):
                future = item[4]
                answers.setdefault(future.get_loop(), []).append((future, outcome))
            for loop, settled in answers.items():
                loop.call_soon_threadsafe(_settle_all, settled)

    def _write(
        self, connection: sqlite3.Connection, queued: list[_Queued]
    ) -> list[Commit | BaseException]:
        with self._turn:
            # IMMEDIATE: the write lock from the start, so the checks and the writes see the
            # same data, whichever process commits next.
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            return _write_begun(cursor, queued)

    def _open_on_loop(self) -> None:
        """In the writer's thread, after a commit: the loop's connection, if it has none."""
        if self._on_loop is not None or self._loop_thread is None or self._closed:
            return
        # Failing, the writer's thread goes on committing; its next success tries again.
        with contextlib.suppress(sqlite3.Error, OSError):
            turn = WriteTurn(self._turn.path)  # its own lock: it excludes this thread's
            self._on_loop = _LoopConnection(self.path, turn, self._loop_thread)

    def _drop_on_loop(self) -> None:
        on_loop, self._on_loop = self._on_loop, None
        if on_loop is not None and not self._closed:
            # Closed by the writer's thread: the last connection to close checkpoints.
            self._writer.executor.submit(on_loop.close)

    def _counted(self) -> None:
        """Count a transaction; every ``MAINTAIN_EVERY``, the maintainer's thread maintains the
        file."""
        with self._queue_lock:
            self._transactions += 1
            if self._transactions < MAINTAIN_EVERY or self._maintaining or self._closed:
                return
            self._maintaining, self._transactions = True, 0
        self._maintainer.executor.submit(self._maintain)

    def _maintain(self) -> None:
        """In the maintainer's thread: checkpoint the WAL into the database file and remove
        expired entries. The first write after a complete checkpoint starts the WAL over and
        syncs its header to the disk: that write is this one, not a commit on an event loop.

        Most of the checkpoint (copying the pages, syncing both files) is done before the
        write turn is taken, the processes' commits going on meanwhile: a read transaction
        held open all that time keeps every other connection from starting the WAL over.
        Then, in the turn, what was committed meanwhile is checkpointed too, and the write
        made."""
        try:
            self._maintainer._run(self._checkpoint_and_clean)
        except (sqlite3.Error, OSError):
            self._drop_pin()  # the commits report the store's faults; tried again later
        finally:
            self._maintaining = False

    def _checkpoint_and_clean(self, connection: sqlite3.Connection) -> None:
        if self._pin is None:
            self._pin = connect(self.path)
            _no_autocheckpoint(self._pin)
        pin = self._pin
        pin.execute("BEGIN")
        try:
            # A WAL reader's snapshot: while it is open, no writer starts the WAL over.
            pin.execute(_LAST_VERSION).fetchone()
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            with self._maintainer_turn:
                pin.execute("COMMIT")
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                connection.execute("BEGIN IMMEDIATE")
                try:
                    # Written even when nothing expired: this is the WAL's first write. A
                    # version taken, not the same one rewritten: SQLite writes no page whose
                    # content is unchanged, and a commit of no page does not start the WAL.
                    connection.execute(_TAKE_VERSIONS, (1,))
                    connection.execute(
                        "DELETE FROM entries WHERE (namespace, key) IN (SELECT namespace, key "
                        "FROM entries WHERE expires_at <= ? LIMIT ?)",
                        (self._now, CLEANUP_BATCH),
                    )
                except BaseException:
                    connection.rollback()
                    raise
                connection.execute("COMMIT")
        finally:
            if pin.in_transaction:
                pin.rollback()

    def _drop_pin(self) -> None:
        pin, self._pin = self._pin, None
        if pin is not None:
            pin.close()

    async def close(self) -> None:
        self._closed = True
        await self._writer.run(self._close_on_loop)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._maintainer.executor, self._drop_pin)
        await self._maintainer.close()
        self._maintainer_turn.close()
        await self._reader.close()
        await self._writer.close()
        self._turn.close()

    def _close_on_loop(self, connection: sqlite3.Connection) -> None:
        # In the writer's thread, after anything it was doing (which may have opened it).
        on_loop, self._on_loop = self._on_loop, None
        if on_loop is not None:
            on_loop.close()

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if not self._ready:  # the schema first, once, and the loop's connection
                if self._loop_thread is None:
                    self._loop_thread = threading.get_ident()
                await self._writer.run(lambda connection: self._open_on_loop())
                self._ready = True
            return await self._reader.run(work)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_FULL":
            return StoreFull(self.description, str(exc))
        return StoreUnavailable(self.description, f"{exc} ({name or type(exc).__name__})")


def _short(checks: Sequence[Check], mutations: Sequence[Mutation]) -> bool:
    """Whether a commit is small enough to make on the event loop's thread."""
    if len(checks) + len(mutations) > LOOP_MAX_OPERATIONS:
        return False
    size = 0
    for mutation in mutations:
        if mutation.value is not None:
            size += len(mutation.value)
    return size <= LOOP_MAX_BYTES


def _busy(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


_Queued = tuple[str, Sequence[Check], Sequence[Mutation], float, "asyncio.Future[Commit]"]
"""A commit waiting: its namespace, checks, mutations, clock, and the future it answers (a
plain tuple: one is made per commit, and a dataclass's ``__init__`` cost more)."""


def _settle_all(settled: list[tuple[asyncio.Future[Commit], Commit | BaseException]]) -> None:
    for future, outcome in settled:
        _settle(future, outcome)


def _settle(future: asyncio.Future[Commit], outcome: Commit | BaseException) -> None:
    if future.cancelled():  # its caller gave up; the commit stands (or failed) all the same
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _no_autocheckpoint(connection: sqlite3.Connection) -> None:
    # Checkpoints sync the disk: only ``SqliteBackend._maintain`` makes them.
    connection.execute("PRAGMA wal_autocheckpoint = 0")


def _create_schema(connection: sqlite3.Connection) -> None:
    _no_autocheckpoint(connection)
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
    except BaseException:
        connection.rollback()
        raise
    connection.execute("COMMIT")


_Entry = tuple[bytes, int, float | None]
"""An entry's value, version and expiry, as ``_GET`` reads it."""
_Staged = dict[tuple[str, str], "_Entry | None"]
"""The entries a transaction's commits wrote so far (None: deleted), by namespace and key."""


def _write_begun(cursor: sqlite3.Cursor, queued: Sequence[_Queued]) -> list[Commit | BaseException]:
    """The queued commits, in the transaction just begun, then committed (or rolled back, and
    the error raised). A commit that fails (``NotAnInteger``) writes nothing and takes
    nothing from the others: each computes everything before it writes.

    The commits write into a plan, which later commits read through; each entry the plan
    holds is written once, at the end. A batch of increments of one counter (the notes'
    ids) reads it once and writes it once, not once per increment."""
    outcomes: list[Commit | BaseException] = []
    try:
        # The versions of the whole transaction in one statement: one a commit that writes
        # (one that fails leaves its number unused; versions only have to grow).
        writing = sum(1 for item in queued if item[2])
        version = 0
        if writing:
            cursor.execute(_TAKE_VERSIONS, (writing,))
            (last,) = cursor.execute(_LAST_VERSION).fetchone()
            version = last - writing
        staged: _Staged = {}
        for namespace, checks, mutations, now, _ in queued:
            if mutations:
                version += 1
            try:
                outcome: Commit | BaseException = _apply(
                    cursor, staged, namespace, checks, mutations, now, version
                )
            except StoreError as exc:
                outcome = exc
            outcomes.append(outcome)
        _write_staged(cursor, staged)
        cursor.execute("COMMIT")
    except BaseException:
        connection = cursor.connection
        if connection.in_transaction:
            connection.rollback()
        raise
    return outcomes


def _apply(
    cursor: sqlite3.Cursor,
    staged: _Staged,
    namespace: str,
    checks: Sequence[Check],
    mutations: Sequence[Mutation],
    now: float,
    version: int,
) -> Commit:
    """One commit, its writes added to ``staged`` only if it succeeds."""
    for check in checks:
        entry = _read(cursor, staged, namespace, check.key, now)
        if (entry[1] if entry is not None else None) != check.version:
            return Commit(False)
    if not mutations:
        return Commit(True)
    if len(mutations) == 1:  # most commits: nothing to compute beforehand
        mutation = mutations[0]
        if mutation.kind == "set":
            assert mutation.value is not None
            staged[namespace, mutation.key] = (mutation.value, version, mutation.expires_at)
            return Commit(True, version)
        if mutation.kind == "delete":
            staged[namespace, mutation.key] = None
            return Commit(True, version)
        entry = _read(cursor, staged, namespace, mutation.key, now)
        value, total = incremented(entry[0] if entry else None, mutation.by, mutation.key)
        staged[namespace, mutation.key] = (value, version, entry[2] if entry else None)
        return Commit(True, version, (total,))
    # Computed in full before anything is staged: a failing increment writes nothing.
    written: dict[str, _Entry | None] = {}
    sums: list[int] = []
    for mutation in mutations:
        key = mutation.key
        if mutation.kind == "set":
            assert mutation.value is not None
            written[key] = (mutation.value, version, mutation.expires_at)
        elif mutation.kind == "delete":
            written[key] = None
        else:
            before = written[key] if key in written else _read(cursor, staged, namespace, key, now)
            value, total = incremented(before[0] if before else None, mutation.by, key)
            written[key] = (value, version, before[2] if before else None)
            sums.append(total)
    for key, entry in written.items():
        staged[namespace, key] = entry
    return Commit(True, version, tuple(sums))


def _read(
    cursor: sqlite3.Cursor, staged: _Staged, namespace: str, key: str, now: float
) -> _Entry | None:
    """The live entry of ``key`` as the transaction's commits so far left it."""
    try:
        entry = staged[namespace, key]
    except KeyError:
        return cursor.execute(_GET, (namespace, key, now)).fetchone()
    if entry is None or (entry[2] is not None and entry[2] <= now):
        return None
    return entry


def _write_staged(cursor: sqlite3.Cursor, staged: _Staged) -> None:
    """Every entry the transaction's commits wrote, in a statement per kind of write."""
    lasting: list[tuple[str, str, bytearray, int]] = []
    expiring: list[tuple[str, str, bytearray, int, float]] = []
    deleted: list[tuple[str, str]] = []
    for (namespace, key), entry in staged.items():
        # ``bytearray`` and no None: Python's sqlite3 binds those types as they are, while a
        # ``bytes`` or None goes through its adapter lookup first, which raises and clears
        # an AttributeError each time (as much work as the rest of the statement's binding).
        if entry is None:
            deleted.append((namespace, key))
        elif entry[2] is None:
            lasting.append((namespace, key, bytearray(entry[0]), entry[1]))
        else:
            expiring.append((namespace, key, bytearray(entry[0]), entry[1], entry[2]))
    if deleted:
        cursor.executemany(_DELETE, deleted)
    if lasting:
        cursor.executemany(_PUT_LASTING, lasting)
    if expiring:
        cursor.executemany(_PUT, expiring)


def prefix_end(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: no
    bound), for a range scan: the last character that can be, moved to the next code point."""
    characters = list(prefix)
    while characters:
        last = ord(characters.pop()) + 1
        if 0xD800 <= last <= 0xDFFF:  # surrogates are not characters: skip to U+E000
            last = 0xE000
        if last <= 0x10FFFF:
            return "".join(characters) + chr(last)
    return None
