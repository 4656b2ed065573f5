"""The memory backend: entries in a dict, for tests and for a host with nothing durable. Every
operation finishes without awaiting, so each commit is atomic on its event loop."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from .backend import Check, Commit, Mutation, Record, planned_writes


class MemoryBackend:
    """Entries of every namespace in this process's memory; gone when it ends."""

    def __init__(self, description: str = "memory:") -> None:
        self.description = description
        self._entries: dict[str, dict[str, Record]] = {}
        self._keys: dict[str, list[str]] = {}  # each namespace's keys, sorted
        self._version = 0

    async def get(self, namespace: str, key: str, now: float) -> Record | None:
        return self._live(namespace, key, now)

    async def list(
        self, namespace: str, prefix: str, start_after: str | None, limit: int, now: float
    ) -> list[Record]:
        keys = self._keys.get(namespace, [])
        if start_after is not None and start_after >= prefix:
            index = bisect.bisect_right(keys, start_after)
        else:
            index = bisect.bisect_left(keys, prefix)
        found: list[Record] = []
        while index < len(keys) and len(found) < limit:
            key = keys[index]
            if not key.startswith(prefix):
                break
            index += 1
            record = self._live(namespace, key, now)
            if record is None:  # expired and dropped: the same index is the next key
                index -= 1
                continue
            found.append(record)
        return found

    async def commit(
        self, namespace: str, checks: Sequence[Check], mutations: Sequence[Mutation], now: float
    ) -> Commit:
        for check in checks:
            record = self._live(namespace, check.key, now)
            if (record.version if record is not None else None) != check.version:
                return Commit(False)
        if not mutations:
            return Commit(True)
        version = self._version + 1
        written, sums = planned_writes(
            mutations, lambda key: self._live(namespace, key, now), version
        )
        self._version = version
        for key, record in written.items():
            if record is None:
                self._drop(namespace, key)
            else:
                self._put(namespace, record)
        return Commit(True, version, sums)

    async def close(self) -> None:
        self._entries.clear()
        self._keys.clear()

    def _live(self, namespace: str, key: str, now: float) -> Record | None:
        record = self._entries.get(namespace, {}).get(key)
        if record is not None and record.expires_at is not None and record.expires_at <= now:
            self._drop(namespace, key)  # lazy clean-up
            return None
        return record

    def _put(self, namespace: str, record: Record) -> None:
        entries = self._entries.setdefault(namespace, {})
        if record.key not in entries:
            bisect.insort(self._keys.setdefault(namespace, []), record.key)
        entries[record.key] = record

    def _drop(self, namespace: str, key: str) -> None:
        entries = self._entries.get(namespace, {})
        if entries.pop(key, None) is not None:
            keys = self._keys[namespace]
            del keys[bisect.bisect_left(keys, key)]
