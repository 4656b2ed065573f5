"""Staged start-up: a manifest's plug-ins load side by side, each mounts when it is ready,
and requests that come meanwhile wait only for the plug-ins that could answer them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import LOAD_FAILURES, PluginLoadError
from .kinds import Plugin
from .manifest import Manifest, PluginSpec
from .outbound import CALLING, Calling, release
from .responses import error_message
from .routing import Mount
from .store.loading import loading_with
from .wire import RequestMessage, ResponseMessage

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("valor")


@dataclass(frozen=True)
class Holding:
    """How a manifest's plug-ins' starts make way for requests (``Runtime.start_loading``)."""

    pause: float
    quiet: float
    until: float  # the loop's time after which only ``pause`` is kept


NOT_HELD = Holding(0.0, 0.0, 0.0)


class Unavailable:
    """Stands at the prefix of a plug-in that failed to load: its requests get a 503 that
    names the failure, instead of falling through to a shorter prefix or a 404."""

    def __init__(self, failure: PluginLoadError) -> None:
        self.failure = failure

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        return error_message(503, str(self.failure))

    async def close(self) -> None:
        return None


async def load_plugin(runtime: Runtime, spec: PluginSpec) -> Plugin:
    """Load one plug-in with the runtime's loader for its kind; ``PluginLoadError`` when it
    cannot be (whatever its code raised is logged)."""
    loader = runtime.loaders.get(spec.type)
    if loader is None:
        raise PluginLoadError(
            spec.name,
            f"type {spec.type!r} is not supported by this host "
            f"(supported: {', '.join(sorted(runtime.loaders))})",
        )
    calling = CALLING.set(Calling(runtime, spec))  # its client works in on_create too
    try:
        with loading_with(runtime.store_for(spec)):
            return await loader(spec)
    except PluginLoadError:
        await release(runtime, spec.name)
        raise
    except LOAD_FAILURES as exc:
        log.exception("loading plug-in %r failed", spec.name)
        await release(runtime, spec.name)
        raise PluginLoadError(spec.name, f"{type(exc).__name__}: {exc}") from exc
    finally:
        CALLING.reset(calling)


async def close_quietly(mount: Mount) -> None:
    """Close a plug-in; a failure is logged, never raised (the others still close)."""
    try:
        await mount.plugin.close()
    except Exception:
        log.exception("closing plug-in %r failed", mount.spec.name)


class StagedStart:
    """The load of a manifest under way: which plug-ins are still loading (``pending``) or not
    started yet (``queued``), and the requests waiting for them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.loading: asyncio.Future[None] | None = None  # while a manifest loads
        self.pending: dict[str, asyncio.Future[None]] = {}  # plug-ins loading, by prefix
        self.queued: dict[str, PluginSpec] = {}  # not started yet, by prefix, next first
        self.hurry = asyncio.Event()  # a request waits for a queued plug-in
        self.last_request = 0.0  # when a request last came while plug-ins were loading

    def expect(self, manifest: Manifest) -> None:
        """Check the manifest's names and prefixes, and note its plug-ins as loading."""
        runtime = self.runtime
        runtime.base_dir = manifest.base_dir
        for spec in manifest.plugins:
            runtime.table.check_free(spec)
        runtime.manifest_names |= {spec.name for spec in manifest.plugins}
        loop = asyncio.get_running_loop()
        self.loading = loop.create_future()
        self.pending = {spec.prefix: loop.create_future() for spec in manifest.plugins}

    async def load_all(
        self, specs: list[PluginSpec], strict: bool, held: Holding = NOT_HELD
    ) -> list[PluginLoadError]:
        """Load ``specs``; failures are logged and returned. A cancelled load, or with
        ``strict`` a failure, unloads what loaded and raises."""
        runtime = self.runtime
        table = runtime.table
        # Side by side (Deno starting, modules compiling, workers starting in the browser);
        # each mounts when it is ready, and the manifest's order is restored at the end.
        tasks: list[asyncio.Task[Mount]] = []
        stopped: BaseException | None = None
        self.queued = {spec.prefix: spec for spec in specs}
        self.last_request = asyncio.get_running_loop().time()
        try:
            while self.queued:
                spec = self.queued.pop(next(iter(self.queued)))
                tasks.append(asyncio.ensure_future(self._load_and_mount(spec)))
                if self.queued:
                    held = await self._hold_next_start(held)
        except BaseException as exc:  # cancelled: so are the loads; what loaded is closed below
            stopped = exc
            for task in tasks:
                task.cancel()
        try:
            results = await asyncio.gather(*tasks, return_exceptions=True)
            loaded = [r for r in results if isinstance(r, Mount)]
            failures = [r for r in results if isinstance(r, PluginLoadError)]
            unexpected = [r for r in results if isinstance(r, BaseException) and r not in failures]
            if stopped is not None:
                unexpected.insert(0, stopped)
            if unexpected or (strict and failures):  # a cancelled start-up, Ctrl-C; --strict
                async with runtime.changing:
                    for mount in loaded:
                        del table.mounts[mount.spec.name]
                    for spec in specs:
                        table.unloaded.pop(spec.name, None)
                    runtime.reroute()
                for mount in loaded:
                    await close_quietly(mount)
                raise (unexpected or failures)[0]
            order = {spec.name: index for index, spec in enumerate(specs)}
            async with runtime.changing:
                # Plug-ins mounted before this load keep their place, first.
                ranked = sorted(table.mounts.items(), key=lambda item: order.get(item[0], -1))
                table.mounts = dict(ranked)
                runtime.reroute()
            for failure in failures:
                log.error("%s", failure)
            await runtime.follow_registry()
            return failures
        finally:
            self.queued = {}
            self.hurry.clear()  # a request that hurried the last start: nothing left to hold
            for waiting in self.pending.values():  # never started: their requests go on
                waiting.set_result(None)
            self.pending = {}
            if self.loading is not None:
                self.loading.set_result(None)
                self.loading = None

    async def _hold_next_start(self, held: Holding) -> Holding:
        """Wait before the next plug-in's start: ``held.pause``, then while requests keep
        coming (until ``held.until``). A request for a queued plug-in ends the wait. Returns
        how to hold the start after it: ``NOT_HELD`` once holding failed, so a fault in this
        courtesy never costs a plug-in its start."""
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            await asyncio.sleep(0)  # at the least, a request that came meanwhile goes first
            while not self.hurry.is_set():
                until = max(started + held.pause, min(self.last_request + held.quiet, held.until))
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.hurry.wait(), remaining)
        except Exception:
            log.exception("holding the plug-ins' starts failed: the rest start at once")
            return NOT_HELD
        finally:
            self.hurry.clear()
        return held

    async def _load_and_mount(self, spec: PluginSpec) -> Mount:
        runtime = self.runtime
        table = runtime.table
        try:
            try:
                mount = Mount(spec, await load_plugin(runtime, spec), runtime.root_path)
            except PluginLoadError as failure:
                async with runtime.changing:
                    table.unloaded[spec.name] = Mount(spec, Unavailable(failure), runtime.root_path)
                    runtime.reroute(notify=False)
                raise
            async with runtime.changing:
                table.mounts[spec.name] = mount
                runtime.reroute(notify=False)  # subscribers hear once, when the load is over
            log.info("mounted %s plug-in %r at %s", spec.type, spec.name, spec.prefix)
            return mount
        finally:
            loaded = self.pending.pop(spec.prefix, None)
            if loaded is not None:
                loaded.set_result(None)

    async def loaded(self) -> None:
        """Wait for a manifest still loading: the built-ins answer for all of it."""
        if self.loading is not None:
            await asyncio.shield(self.loading)

    async def loaded_for(self, path: str) -> None:
        """Wait until the plug-ins still loading that could answer ``path`` have loaded (or
        failed to); those not started yet start next."""
        self.last_request = asyncio.get_running_loop().time()
        for prefix, loaded in list(self.pending.items()):
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                if prefix in self.queued:
                    self.queued = {prefix: self.queued.pop(prefix), **self.queued}
                    self.hurry.set()
                await asyncio.shield(loaded)
