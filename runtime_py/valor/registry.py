"""The registry's changes in the store: plug-ins added or removed through ``/_plugins`` are
kept under the reserved namespace ``_valor``, so every process sharing the store (workers,
servers on one Redis, tabs on one IndexedDB) follows them, and they outlast a restart.

Keys: ``registry/added/<name>`` (the definition as posted), ``registry/removed/<name>`` (a
manifest plug-in taken out) and ``registry/generation``, bumped in the same batch as each
change. Each runtime polls the generation (one read every ``POLL_INTERVAL``) and, when it
moved, mounts and unmounts until it serves what the registry says.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .errors import ManifestError, PluginLoadError
from .manifest import parse_plugin
from .store import Store, StoreError

if TYPE_CHECKING:
    from .runtime import Runtime

NAMESPACE = "_valor"
"""Valor's own namespace: a plug-in's store name cannot start with ``_``."""
POLL_INTERVAL = 0.5
ADDED = "registry/added/"
REMOVED = "registry/removed/"
GENERATION = "registry/generation"

log = logging.getLogger("valor")


class SharedRegistry:
    """What ``/_plugins`` changed, kept in ``runtime.store`` and followed by every runtime
    that shares it."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store = Store(runtime.store, NAMESPACE)
        # Held while a change is made here and recorded, and while changes are applied: a
        # plug-in mounted but not yet recorded is not taken for one removed elsewhere.
        self.lock = asyncio.Lock()
        self._seen: str | None = None  # the generation's version last applied
        self._ours: set[str] = set()  # mounted through the registry, not by the manifest
        self._task: asyncio.Task[None] | None = None

    async def added(self, name: str, definition: dict[str, Any]) -> None:
        """Record a plug-in added through ``POST /_plugins``."""
        batch = self.store.atomic().set(ADDED + name, definition).delete(REMOVED + name)
        await batch.increment(GENERATION).commit()
        self._ours.add(name)

    async def removed(self, name: str, in_manifest: bool) -> None:
        """Record a plug-in removed through ``DELETE /_plugins/<name>``."""
        batch = self.store.atomic().delete(ADDED + name)
        batch = batch.set(REMOVED + name, True) if in_manifest else batch.delete(REMOVED + name)
        await batch.increment(GENERATION).commit()
        self._ours.discard(name)

    def follow(self) -> None:
        """Start polling the store for other runtimes' changes (until ``stop``)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._poll())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def apply(self) -> None:
        """Mount and unmount until the runtime serves what the registry says."""
        async with self.lock:
            await self._apply()

    async def _apply(self) -> None:
        entry = await self.store.get_entry(GENERATION)
        generation = entry.version if entry is not None else None
        if generation == self._seen:
            return
        added: dict[str, dict[str, Any]] = {}
        removed: set[str] = set()
        cursor = None
        while True:
            page = await self.store.list("registry/", limit=1000, cursor=cursor)
            for item in page.entries:
                if item.key.startswith(ADDED):
                    added[item.key[len(ADDED) :]] = item.value
                elif item.key.startswith(REMOVED):
                    removed.add(item.key[len(REMOVED) :])
            cursor = page.cursor
            if cursor is None:
                break
        await self._reconcile(added, removed)
        self._seen = generation

    async def _reconcile(self, added: dict[str, dict[str, Any]], removed: set[str]) -> None:
        runtime = self.runtime
        mounted = {spec.name: spec for spec in runtime.plugins}
        for name, spec in mounted.items():
            stale = name in added and spec.source != added[name]
            dropped = name in removed or (name in self._ours and name not in added)
            if stale or dropped:
                await runtime.remove(name)
                self._ours.discard(name)
        mounted = {spec.name for spec in runtime.plugins}
        base_dir = runtime.base_dir
        for name, definition in added.items():
            if name in mounted or base_dir is None:
                continue
            try:
                await runtime.add(parse_plugin(definition, base_dir, where="registry"))
                self._ours.add(name)
            except (ManifestError, PluginLoadError) as exc:
                log.error("the registry's plug-in %r cannot be mounted here: %s", name, exc)

    async def _poll(self) -> None:
        failing = False  # logged once per outage, not twice a second
        while True:
            try:
                await self.apply()
                if failing:
                    log.warning("following the registry again")
                failing = False
            except StoreError as exc:  # unavailable for now: the next poll tries again
                if not failing:
                    log.warning("cannot follow the registry until the store is back: %s", exc)
                failing = True
            except Exception:
                log.exception("following the registry failed")
            await asyncio.sleep(POLL_INTERVAL)
