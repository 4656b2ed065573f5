"""The store of an isolated Python plug-in, over its frames (``"isolation": "process"``).

The helper process keeps a ``Store`` of its own whose backend is ``ChildBackend``: the core's
checks, encoding, versions and cursors run there, as in the server's process, and each backend
call (get, list, commit) travels to the host as a *store call*, a frame from the child whose
head has ``"call": "store"``; the host runs it on the plug-in's real store (``run_store_call``)
and answers with a frame of the same id whose head has ``"reply": true``. Ids of calls are the
child's own, apart from the host's request ids: the head tells a call and its reply from a
request and its answer.

The host trusts nothing of a call: it runs it in the plug-in's own namespace (the child never
names one), with the host's clock, and checks keys, sizes and counts again. A store error
comes back as its type's name and arguments, raised in the child as the same type with the
same message (``StoreUnavailable`` and ``StoreFull`` with the store's name, so an uncaught one
answers the same 503 or 507 as in the host's process).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from ...store import codec, errors
from ...store.api import Store
from ...store.backend import Check, Commit, Mutation, Record
from ...store.limits import (
    MAX_BATCH_OPERATIONS,
    MAX_LIST_LIMIT,
    MAX_VALUE_BYTES,
    check_increment,
    check_key,
)

# The errors that cross the channel as themselves; anything else is the host's own failure.
ERRORS: dict[str, type[errors.StoreError]] = {
    cls.__name__: cls
    for cls in (
        errors.StoreError,
        errors.KeyInvalid,
        errors.ValueNotStorable,
        errors.ValueTooLarge,
        errors.NotAnInteger,
        errors.BatchInvalid,
        errors.CursorInvalid,
        errors.StoreUnavailable,
        errors.StoreFull,
    )
}
MUTATION_KINDS = ("set", "delete", "increment")

Head = dict[str, Any]
SendFrame = Callable[[int, Head, bytes], None]


def error_head(exc: errors.StoreError) -> Head:
    """A store error as the reply (or an answer's) head carries it."""
    if isinstance(exc, errors.StoreUnavailable):
        return {"type": type(exc).__name__, "store": exc.store, "reason": exc.reason}
    return {"type": type(exc).__name__, "message": str(exc)}


def error_from(head: Head) -> errors.StoreError:
    """The store error ``error_head`` described: the same type, the same message."""
    cls = ERRORS.get(str(head.get("type")), errors.StoreError)
    if issubclass(cls, errors.StoreUnavailable):
        return cls(str(head.get("store")), str(head.get("reason")))
    return cls(str(head.get("message", "the host could not run this store call (see its log)")))


# The child's side.


class ChildBackend:
    """A ``Backend`` whose every call is a store call to the host, over ``send``; the host's
    replies come in through ``replied`` (the child's frame reader calls it)."""

    def __init__(self, description: str, send: SendFrame) -> None:
        self.description = description
        self._send = send
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[tuple[Head, bytes]]] = {}

    def replied(self, call_id: int, head: Head, body: bytes) -> None:
        """The host's reply to call ``call_id``."""
        future = self._waiting.pop(call_id, None)
        if future is not None and not future.done():
            future.set_result((head, body))

    async def _call(self, head: Head, body: bytes = b"") -> tuple[Head, bytes]:
        call_id = next(self._ids) % 0xFFFF_FFFF + 1
        future: asyncio.Future[tuple[Head, bytes]] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        try:
            self._send(call_id, {"call": "store", **head}, body)
            reply, data = await future
        finally:
            self._waiting.pop(call_id, None)
        if "error" in reply:
            raise error_from(reply["error"])
        return reply, data

    async def get(self, namespace: str, key: str, now: float) -> Record | None:
        head, body = await self._call({"op": "get", "key": key})
        found = _records(head["records"], body)
        return found[0] if found else None

    async def list(
        self, namespace: str, prefix: str, start_after: str | None, limit: int, now: float
    ) -> list[Record]:
        call = {"op": "list", "prefix": prefix, "start_after": start_after, "limit": limit}
        head, body = await self._call(call)
        return _records(head["records"], body)

    async def commit(
        self, namespace: str, checks: Sequence[Check], mutations: Sequence[Mutation], now: float
    ) -> Commit:
        values = [m.value or b"" for m in mutations]
        head = {
            "op": "commit",
            "checks": [[c.key, c.version] for c in checks],
            "mutations": [
                [m.kind, m.key, m.expires_at, m.by, len(v)]
                for m, v in zip(mutations, values, strict=True)
            ],
        }
        reply, _ = await self._call(head, b"".join(values))
        return Commit(bool(reply["ok"]), reply.get("version"), tuple(reply.get("sums", ())))

    async def close(self) -> None:
        """The host closes the real store."""


def _records(rows: list[list[Any]], body: bytes) -> list[Record]:
    records, offset = [], 0
    for key, version, expires_at, size in rows:
        records.append(Record(key, body[offset : offset + size], version, expires_at))
        offset += size
    return records


# The host's side.


async def run_store_call(store: Store, head: Head, body: bytes) -> tuple[Head, bytes]:
    """Run a child's store call on ``store`` (the plug-in's real one); the reply's head and
    body. Never raises: a store error, or a call that does not follow the format, is in the
    reply."""
    try:
        reply, data = await _run(store, head, body)
    except errors.StoreError as exc:
        return {"reply": True, "error": error_head(exc)}, b""
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        problem = errors.BatchInvalid(f"a store call from the plug-in's process is bad: {exc!r}")
        return {"reply": True, "error": error_head(problem)}, b""
    return {"reply": True, **reply}, data


async def _run(store: Store, head: Head, body: bytes) -> tuple[Head, bytes]:
    backend, namespace, now = store.backend, store.namespace, store.clock()
    op = head["op"]
    if op == "get":
        record = await backend.get(namespace, check_key(head["key"]), now)
        return _rows([] if record is None else [record])
    if op == "list":
        prefix = head["prefix"]
        if prefix != "":
            check_key(prefix)
        start_after = head["start_after"]
        if start_after is not None:
            check_key(start_after)
        limit = head["limit"]
        if not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT + 1:
            raise errors.BatchInvalid(f"list limit {limit!r} is out of range")
        return _rows(await backend.list(namespace, prefix, start_after, limit, now))
    if op == "commit":
        checks, mutations = _batch(head, body)
        done = await backend.commit(namespace, checks, mutations, now)
        return {"ok": done.ok, "version": done.version, "sums": list(done.sums)}, b""
    raise errors.BatchInvalid(f"unknown store call {op!r}")


def _rows(records: Sequence[Record]) -> tuple[Head, bytes]:
    rows = [[r.key, r.version, r.expires_at, len(r.value)] for r in records]
    return {"records": rows}, b"".join(r.value for r in records)


def _batch(head: Head, body: bytes) -> tuple[list[Check], list[Mutation]]:
    """A commit's checks and mutations, checked as the core checks them (the child's core may
    not be the one it says it is)."""
    rows_checks, rows_mutations = head["checks"], head["mutations"]
    if len(rows_checks) + len(rows_mutations) > MAX_BATCH_OPERATIONS:
        raise errors.BatchInvalid(
            f"an atomic batch holds at most {MAX_BATCH_OPERATIONS} checks and mutations"
        )
    checks = []
    for key, version in rows_checks:
        if version is not None and (not isinstance(version, int) or version < 0):
            raise errors.BatchInvalid(f"check of store key {key!r}: bad version {version!r}")
        checks.append(Check(check_key(key), version))
    mutations, offset = [], 0
    for kind, key, expires_at, by, size in rows_mutations:
        key = check_key(key)
        if kind not in MUTATION_KINDS:
            raise errors.BatchInvalid(f"unknown mutation {kind!r} of store key {key!r}")
        if expires_at is not None and not isinstance(expires_at, (int, float)):
            raise errors.BatchInvalid(f"bad expiry {expires_at!r} of store key {key!r}")
        value = None
        if kind == "set":
            value = body[offset : offset + size]
            offset += size
            codec.decode(_sized(value, key))  # what other readers of the namespace will read
        mutations.append(Mutation(kind, key, value, expires_at, check_increment(by, key)))
    return checks, mutations


def _sized(value: bytes, key: str) -> bytes:
    if len(value) > MAX_VALUE_BYTES:
        raise errors.ValueTooLarge(f"the value for store key {key!r} is over the limit")
    return value
