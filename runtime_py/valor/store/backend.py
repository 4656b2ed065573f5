"""The protocol between the store's core (``Store``) and a backend (memory, SQLite, Redis,
the browser's IndexedDB).

The core checks keys, limits and arguments, encodes values (``codec``) and renders versions;
a backend keeps encoded values and does each commit atomically. Every method is a coroutine.
``now`` is the core's clock (seconds since the epoch): an entry whose ``expires_at`` is at or
before ``now`` is invisible to every read and check, as if deleted; backends remove such
entries whenever convenient (lazily).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple, Protocol

from .codec import incremented

VERSION_DIGITS = 20
"""Versions are handed out as ``f"{n:020d}"``, so they sort as their numbers do."""

# The types below are named tuples, not frozen dataclasses: a few are made for every store
# call, and a frozen dataclass's ``__init__`` (an ``object.__setattr__`` per field) cost four
# times a named tuple's, a measurable share of a quick backend's call.


class Record(NamedTuple):
    """An entry as a backend keeps it."""

    key: str
    value: bytes  # encoded by ``codec``
    version: int
    expires_at: float | None = None


class Check(NamedTuple):
    """The commit goes ahead only if ``key``'s live entry has ``version`` (None: no live
    entry)."""

    key: str
    version: int | None


class Mutation(NamedTuple):
    """One change of a commit. ``set``: ``value`` (encoded) with ``expires_at``; ``delete``;
    ``increment``: add ``by`` to the integer value (a missing entry counts as 0; the expiry
    stays as it was), through ``codec.incremented``."""

    kind: Literal["set", "delete", "increment"]
    key: str
    value: bytes | None = None
    expires_at: float | None = None
    by: int = 0


class Commit(NamedTuple):
    """What a commit did. ``ok`` False: a check failed and nothing was written. When ``ok``,
    ``version`` is the one version of every entry the commit wrote and ``sums`` the new values
    of its increments, in order. A version is never handed out twice; it is greater than the
    versions of the entries the commit checked or read, and than every version the same
    connection handed out before (memory, SQLite and Redis count: greater than any before;
    IndexedDB's come from each tab's clock, see ``indexeddb``)."""

    ok: bool
    version: int | None = None
    sums: tuple[int, ...] = ()


def planned_writes(
    mutations: Sequence[Mutation], stored: Callable[[str], Record | None], version: int
) -> tuple[dict[str, Record | None], tuple[int, ...]]:
    """What ``mutations`` write under ``version`` (``None``: deleted) and the sums of their
    increments; ``stored(key)`` reads an entry as it was before the commit. For backends that
    compute a commit in Python (memory, IndexedDB): all of it is computed before anything is
    written, so an increment that fails (``NotAnInteger``) writes nothing."""
    written: dict[str, Record | None] = {}
    sums: list[int] = []
    for mutation in mutations:
        key = mutation.key
        if mutation.kind == "set":
            assert mutation.value is not None
            written[key] = Record(key, mutation.value, version, mutation.expires_at)
        elif mutation.kind == "delete":
            written[key] = None
        else:
            before = written[key] if key in written else stored(key)
            value, total = incremented(before.value if before else None, mutation.by, key)
            written[key] = Record(key, value, version, before.expires_at if before else None)
            sums.append(total)
    return written, tuple(sums)


class Backend(Protocol):
    """A place to keep entries, shared by every namespace of one store."""

    description: str
    """Names the store in errors, logs and ``/_health`` (e.g. the SQLite file's path); no
    secrets."""

    async def get(self, namespace: str, key: str, now: float) -> Record | None:
        """The live entry of ``key``, or None."""
        ...

    async def list(
        self, namespace: str, prefix: str, start_after: str | None, limit: int, now: float
    ) -> list[Record]:
        """Up to ``limit`` live entries whose keys start with ``prefix`` and come after
        ``start_after`` (if given), in key order: by Unicode code point, as UTF-8 bytes
        compare."""
        ...

    async def commit(
        self,
        namespace: str,
        checks: Sequence[Check],
        mutations: Sequence[Mutation],
        now: float,
    ) -> Commit:
        """Atomically: if every check holds, apply ``mutations`` in order under one new
        version. Nothing is written when a check fails or an increment raises
        ``NotAnInteger``. Raises ``StoreUnavailable`` (``StoreFull``) when the store cannot
        be reached (is out of space)."""
        ...

    async def close(self) -> None:
        """Release connections and threads; the backend is not used again."""
        ...
