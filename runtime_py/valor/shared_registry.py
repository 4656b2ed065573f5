"""The registry's changes kept in the store, so every runtime sharing the store follows them:
every tab of a site (and every worker or server sharing a store, where a host wires it).

A plug-in added with ``POST /_plugins`` is kept as ``plugin/<name>`` = ``{"definition": ...}``
in the store's ``_registry`` namespace (no plug-in's namespace starts with ``_``); one removed
with ``DELETE /_plugins/<name>`` as ``{"removed": true}`` (a manifest's plug-in too). Each
change also increments ``changes``, in the same atomic batch. A runtime reads ``changes`` every
``poll`` seconds (sooner when hinted, say by a ``BroadcastChannel`` message from another tab)
and, when it moved, mounts and unmounts plug-ins until its set matches the manifest plus the
changes. The store is the truth; hints only make it quicker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PluginLoadError
from .manifest import Manifest, ManifestError, PluginSpec, parse_plugin
from .store import Store, StoreError

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("valor.registry")

NAMESPACE = "_registry"
CHANGES = "changes"
PREFIX = "plugin/"
POLL = 0.5
"""Seconds between two looks at the store: a change shows everywhere within about this."""


class SharedRegistry:
    """Keeps ``runtime``'s registry changes in ``store`` and applies everyone else's."""

    def __init__(
        self,
        runtime: Runtime,
        store: Store,
        poll: float = POLL,
        announce: Callable[[], None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.poll = poll
        self.announce = announce
        """Called after this runtime kept a change: tells the others to look now."""
        self._seen: str | None = None  # the version of ``changes`` last applied
        self._hint = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- this runtime's changes -----------------------------------------------------------------

    async def added(self, spec: PluginSpec) -> None:
        """Keep a plug-in ``POST /_plugins`` just mounted. ``StoreUnavailable`` if the store
        cannot be reached (the caller unmounts it again)."""
        await self._record(spec.name, {"definition": spec.source})

    async def removed(self, name: str) -> None:
        """Keep a removal by ``DELETE /_plugins/<name>``."""
        await self._record(name, {"removed": True})

    async def _record(self, name: str, change: dict[str, Any]) -> None:
        await self.store.atomic().set(PREFIX + name, change).increment(CHANGES).commit()
        if self.announce is not None:
            try:
                self.announce()
            except Exception:  # a hint only: the others see the change at their next poll
                log.exception("announcing a registry change failed")

    # -- following everyone's ---------------------------------------------------------------------

    def start(self) -> None:
        """Follow the store from now on (call on the runtime's event loop)."""
        self._task = asyncio.ensure_future(self._follow())

    def hint(self) -> None:
        """Something may have changed: look now rather than at the next poll."""
        self._hint.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self) -> None:
        while True:
            try:
                await self.sync()
            except StoreError as exc:  # unreachable for now: tried again at the next poll
                log.warning("following the registry's changes: %s", exc)
            except Exception:
                log.exception("following the registry's changes failed")
            self._hint.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hint.wait(), self.poll)

    async def applied_to(self, manifest: Manifest) -> Manifest:
        """``manifest`` with the kept changes made, for a runtime about to load it: a removed
        plug-in is never started, an added one starts with the rest. If the store cannot be
        reached, ``manifest`` as it is (the changes are applied once it can)."""
        try:
            version, changes = await self._read()
        except StoreError as exc:
            log.warning("the registry's changes are not applied yet: %s", exc)
            return manifest
        specs = {spec.name: spec for spec in manifest.plugins}
        for name, change in changes.items():
            definition = change.get("definition")
            specs.pop(name, None)
            if definition is None:
                continue
            try:
                spec = parse_plugin(definition, manifest.base_dir, where=_where(name))
            except ManifestError as exc:
                log.error("the registry's plug-in %r cannot be mounted here: %s", name, exc)
                continue
            taken = next((s.name for s in specs.values() if s.prefix == spec.prefix), None)
            if taken is not None:
                log.error("the registry's plug-in %r: prefix %r is %r's", name, spec.prefix, taken)
                continue
            specs[name] = spec
        self._seen = version
        return replace(manifest, plugins=list(specs.values()))

    async def sync(self) -> None:
        """Apply the changes kept in the store since the last look, if any."""
        entry = await self.store.get_entry(CHANGES)
        if entry is not None and entry.version == self._seen:
            return
        version, changes = await self._read()
        for name, change in changes.items():
            await self._apply(name, change)
        self._seen = version

    async def _read(self) -> tuple[str | None, dict[str, dict[str, Any]]]:
        """The version of ``changes`` and every kept change, by plug-in name."""
        entry = await self.store.get_entry(CHANGES)
        changes: dict[str, dict[str, Any]] = {}
        cursor = None
        while True:
            page = await self.store.list(PREFIX, limit=1000, cursor=cursor)
            changes.update({e.key.removeprefix(PREFIX): e.value for e in page.entries})
            cursor = page.cursor
            if cursor is None:
                break
        # Read in two steps: a change made in between is seen again at the next look.
        return (entry.version if entry is not None else None), changes

    async def _apply(self, name: str, change: dict[str, Any]) -> None:
        mounted = next((s for s in self.runtime.plugins if s.name == name), None)
        definition = change.get("definition")
        if definition is None:  # removed
            if mounted is not None:
                with contextlib.suppress(KeyError):  # removed meanwhile
                    await self.runtime.remove(name)
            return
        if mounted is not None and mounted.source == definition:
            return
        base_dir = self.runtime.base_dir or Path.cwd()
        try:
            spec = parse_plugin(definition, base_dir, where=_where(name))
            if mounted is not None:
                await self.runtime.remove(name)
            await self.runtime.add(spec)
        except (ManifestError, PluginLoadError, KeyError) as exc:
            log.error("the registry's plug-in %r cannot be mounted here: %s", name, exc)


def _where(name: str) -> str:
    return f"the registry's plug-in {name!r}"
