"""The registry's changes in the store: plug-ins added or removed through ``/_plugins`` are
kept under the reserved namespace ``_valor``, so every process sharing the store (workers,
servers on one Redis, tabs on one IndexedDB) follows them, and they outlast a restart.

Keys: ``registry/added/<name>`` (the definition as posted), ``registry/removed/<name>`` (a
manifest plug-in taken out) and ``registry/generation``, bumped in the same batch as each
change. Each runtime polls the generation (one read every ``POLL_INTERVAL``) and, when it
moved, mounts and unmounts until it serves what the registry says.

``valor registry show`` prints the record and ``valor registry reset`` removes it (``main``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from .errors import ManifestError, PluginLoadError
from .manifest import parse_plugin
from .store import Store, StoreError
from .store.limits import MAX_BATCH_OPERATIONS

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
        added, removed = await read_record(self.store)
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


async def read_record(store: Store) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """The registry's record in ``store`` (its ``_valor`` namespace): the plug-ins added, by
    name, with their definitions, and the names of the manifest's plug-ins removed."""
    added: dict[str, dict[str, Any]] = {}
    removed: set[str] = set()
    cursor = None
    while True:
        page = await store.list("registry/", limit=1000, cursor=cursor)
        for item in page.entries:
            if item.key.startswith(ADDED):
                added[item.key[len(ADDED) :]] = item.value
            elif item.key.startswith(REMOVED):
                removed.add(item.key[len(REMOVED) :])
        cursor = page.cursor
        if cursor is None:
            return added, removed


async def reset_record(store: Store) -> tuple[list[str], list[str]]:
    """Remove the registry's record from ``store``: the names of the plug-ins that were added
    and of those that were removed. Each batch also bumps the generation, so every runtime
    following the store drops the added plug-ins within ``POLL_INTERVAL``."""
    added, removed = await read_record(store)
    keys = [ADDED + name for name in sorted(added)] + [REMOVED + name for name in sorted(removed)]
    step = MAX_BATCH_OPERATIONS - 1  # and the generation's increment
    for start in range(0, len(keys), step):
        batch = store.atomic()
        for key in keys[start : start + step]:
            batch.delete(key)
        await batch.increment(GENERATION).commit()
    return sorted(added), sorted(removed)


def main(argv: list[str] | None = None) -> int:
    """``valor registry show|reset [MANIFEST] [--store URL]``."""
    import argparse
    import json
    import os
    import sys
    from pathlib import Path

    from .manifest import load_manifest
    from .store.urls import default_url, open_backend

    parser = argparse.ArgumentParser(
        prog="valor registry",
        description="The record of the plug-ins added and removed through /_plugins, which "
        "valor serve --registry keeps in the store and every server on that store follows "
        "(docs/state.md).",
    )
    parser.add_argument(
        "action",
        choices=["show", "reset"],
        help="show: print the record as JSON; reset: remove it, back to the manifest alone",
    )
    parser.add_argument(
        "manifest",
        nargs="?",
        default="plugins/plugins.json",
        metavar="MANIFEST",
        help="the manifest whose store to open (default: plugins/plugins.json)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get("VALOR_STORE"),
        help="the store, as valor serve --store takes it (default: $VALOR_STORE, else the "
        'manifest\'s "store", else valor-store.sqlite3 beside the manifest)',
    )
    args = parser.parse_args(argv)
    try:
        if args.store:
            backend = open_backend(args.store, Path.cwd())
        else:
            manifest = load_manifest(args.manifest)
            url = manifest.store or default_url(manifest.base_dir)
            backend = open_backend(url, manifest.base_dir)
    except (ManifestError, StoreError) as exc:
        print(f"valor registry: {exc}", file=sys.stderr)
        return 1

    async def run() -> int:
        store = Store(backend, NAMESPACE)
        try:
            if args.action == "show":
                added, removed = await read_record(store)
                record = {"added": added, "removed": sorted(removed)}
                print(json.dumps({"store": backend.description, **record}, indent=2))
                return 0
            added_names, removed_names = await reset_record(store)
        except StoreError as exc:
            print(f"valor registry: {exc}", file=sys.stderr)
            return 1
        finally:
            await backend.close()
        print(
            f"reset the registry of {backend.description}: forgot {len(added_names)} added "
            f"({', '.join(added_names) or 'none'}) and {len(removed_names)} removed "
            f"({', '.join(removed_names) or 'none'}). Servers on this store drop the added "
            "plug-ins within a second; the manifest's removed plug-ins come back when each "
            "server restarts."
        )
        return 0

    return asyncio.run(run())
