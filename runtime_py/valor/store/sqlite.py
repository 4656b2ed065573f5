"""The SQLite backend, the server's default: one file, WAL mode, shared by every worker
process on the machine. Each connection lives in a thread of its own (one for writes, one for
reads), so the event loop never waits on the disk."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .backend import Check, Commit, Mutation, Record
from .codec import incremented
from .errors import StoreError, StoreFull, StoreUnavailable

T = TypeVar("T")

BUSY_TIMEOUT_MS = 5000
"""How long a write waits for another process's write to finish before it fails (503)."""
CLEANUP_EVERY = 64
CLEANUP_BATCH = 1000
"""Every ``CLEANUP_EVERY``-th commit removes up to ``CLEANUP_BATCH`` expired entries (they
are invisible already: this only gives their space back)."""

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


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection with the store's settings: WAL, synchronous NORMAL (a commit survives
    the process being killed; the last ones may not survive power loss), a busy timeout, and
    transactions begun explicitly."""
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
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
            connection = connect(self.path)
            try:
                self.setup(connection)
            except BaseException:
                connection.close()
                raise
            self.connection = connection
        try:
            return work(self.connection)
        except sqlite3.Error:
            # Start again from a new connection next time (the file may be back, or writable).
            self._drop()
            raise

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
    moment the lock is free (and the kernel frees it when its holder dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


class SqliteBackend:
    """Entries in a SQLite file; safe for several processes on one machine (not on a network
    file system, where WAL does not work)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self.description = f"sqlite:///{self.path.as_posix()}"
        self._writer = _Connection(self.path, _create_schema)
        self._reader = _Connection(self.path, lambda connection: None)
        self._ready = False
        self._turn = WriteTurn(Path(f"{self.path}-lock"))
        self._queue: list[_Queued] = []  # commits waiting for the writer's thread
        self._queue_lock = threading.Lock()
        self._draining = False

    async def get(self, namespace: str, key: str, now: float) -> Record | None:
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Commit] = loop.create_future()
        with self._queue_lock:
            self._queue.append(_Queued(namespace, checks, mutations, now, future, loop))
            start, self._draining = not self._draining, True
        if start:
            self._writer.executor.submit(self._drain)
        return await future

    def _drain(self) -> None:
        """In the writer's thread: commit what is queued, many commits per transaction (a
        savepoint each), until nothing is. Under load each process then takes its turn to
        write once for all its waiting commits, not once per commit."""
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
            # One wake-up of each event loop for the whole batch, not one per commit: each
            # is a write to the loop's self-pipe and a turn of the loop.
            answers: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
            for item, outcome in zip(queued, outcomes, strict=True):
                answers.setdefault(item.loop, []).append((item.future, outcome))
            for loop, settled in answers.items():
                loop.call_soon_threadsafe(_settle_all, settled)

    def _write(
        self, connection: sqlite3.Connection, queued: list[_Queued]
    ) -> list[Commit | BaseException]:
        outcomes: list[Commit | BaseException] = []
        with self._turn:
            # IMMEDIATE: the write lock from the start, so the checks and the writes see the
            # same data, whichever process commits next.
            connection.execute("BEGIN IMMEDIATE")
            try:
                for item in queued:
                    # Only an increment can fail (NotAnInteger) once writes have begun: a
                    # savepoint undoes that commit's, and costs two statements, so only
                    # commits with an increment take one.
                    guarded = any(m.kind == "increment" for m in item.mutations)
                    if guarded:
                        connection.execute("SAVEPOINT one")
                    try:
                        outcomes.append(
                            _apply(
                                connection, item.namespace, item.checks, item.mutations, item.now
                            )
                        )
                    except StoreError as exc:  # NotAnInteger: that commit writes nothing
                        if not guarded:
                            raise
                        connection.execute("ROLLBACK TO one")
                        outcomes.append(exc)
                    if guarded:
                        connection.execute("RELEASE one")
            except BaseException:
                connection.rollback()
                raise
            connection.execute("COMMIT")
        return outcomes

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()
        self._turn.close()

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            if not self._ready:  # the schema first, once
                await self._writer.run(lambda connection: None)
                self._ready = True
            return await self._reader.run(work)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        name = getattr(exc, "sqlite_errorname", "")
        if name == "SQLITE_FULL":
            return StoreFull(self.description, str(exc))
        return StoreUnavailable(self.description, f"{exc} ({name or type(exc).__name__})")


@dataclass
class _Queued:
    namespace: str
    checks: Sequence[Check]
    mutations: Sequence[Mutation]
    now: float
    future: asyncio.Future[Commit]
    loop: asyncio.AbstractEventLoop


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


def _create_schema(connection: sqlite3.Connection) -> None:
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
    except BaseException:
        connection.rollback()
        raise
    connection.execute("COMMIT")


def _apply(
    connection: sqlite3.Connection,
    namespace: str,
    checks: Sequence[Check],
    mutations: Sequence[Mutation],
    now: float,
) -> Commit:
    def current(key: str) -> tuple[bytes, int, float | None] | None:
        return connection.execute(_GET, (namespace, key, now)).fetchone()

    for check in checks:
        row = current(check.key)
        if (row[1] if row is not None else None) != check.version:
            return Commit(False)
    if not mutations:
        return Commit(True)
    (version,) = connection.execute(
        "UPDATE counter SET version = version + 1 WHERE id = 1 RETURNING version"
    ).fetchone()
    # Computed in full before anything is written: a failing increment writes nothing.
    written: dict[str, tuple[bytes, float | None] | None] = {}
    sums: list[int] = []
    for mutation in mutations:
        key = mutation.key
        if mutation.kind == "set":
            assert mutation.value is not None
            written[key] = (mutation.value, mutation.expires_at)
        elif mutation.kind == "delete":
            written[key] = None
        else:
            if key in written:
                before = written[key]
            else:
                row = current(key)
                before = None if row is None else (row[0], row[2])
            value, total = incremented(before[0] if before else None, mutation.by, key)
            written[key] = (value, before[1] if before else None)
            sums.append(total)
    for key, entry in written.items():
        if entry is None:
            connection.execute(
                "DELETE FROM entries WHERE namespace = ? AND key = ?", (namespace, key)
            )
        else:
            connection.execute(
                "INSERT INTO entries (namespace, key, value, version, expires_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE SET "
                "value = excluded.value, version = excluded.version, "
                "expires_at = excluded.expires_at",
                (namespace, key, entry[0], version, entry[1]),
            )
    if version % CLEANUP_EVERY == 0:
        connection.execute(
            "DELETE FROM entries WHERE (namespace, key) IN (SELECT namespace, key FROM entries "
            "WHERE expires_at <= ? LIMIT ?)",
            (now, CLEANUP_BATCH),
        )
    return Commit(True, version, tuple(sums))


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
