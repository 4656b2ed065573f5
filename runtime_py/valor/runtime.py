"""``Runtime``: mounts plug-ins under prefixes and answers wire requests, in either host."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from .concurrency import PluginBusy
from .deadlines import DeadlineExceeded, Deadlines
from .errors import LOAD_FAILURES, BodyError, ManifestError, PluginCrashed, PluginLoadError
from .failures import PluginFailed
from .kinds import Forwarding, Loader, Plugin
from .manifest import Manifest, PluginSpec, parse_plugin
from .outbound import CALLING, Calling, release
from .registry import SharedRegistry
from .responses import JSON, error_message
from .store import MemoryBackend, Store, StoreError, StoreUnavailable
from .store.backend import Backend
from .store.loading import loading_with
from .streaming import Stream, streamed, watched
from .wire import RequestMessage, ResponseMessage, WireError, http_answer, response_message

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024

log = logging.getLogger("valor")
access_log = logging.getLogger("valor.access")

BodyReader = Callable[[], Awaitable["bytes | None"]]
"""Reads a request's body for a host that reads it late; raises ``BodyError``."""


@dataclass(frozen=True)
class Holding:
    """How a manifest's plug-ins' starts make way for requests (``Runtime.start_loading``)."""

    pause: float
    quiet: float
    until: float  # the loop's time after which only ``pause`` is kept


NOT_HELD = Holding(0.0, 0.0, 0.0)


@dataclass(frozen=True)
class Mount:
    spec: PluginSpec
    plugin: Plugin


class Unavailable:
    """Stands at the prefix of a plug-in that failed to load: its requests get a 503 that
    names the failure, instead of falling through to a shorter prefix or a 404."""

    def __init__(self, failure: PluginLoadError) -> None:
        self.failure = failure

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        return error_message(503, str(self.failure))

    async def close(self) -> None:
        return None


class Runtime:
    """Routes each request to the plug-in with the longest matching prefix.

    ``handle`` never raises: every failure becomes an answer with a JSON error body.
    """

    def __init__(
        self,
        loaders: Mapping[str, Loader],
        *,
        root_path: str = "",
        registry: bool = False,
        registry_token: str | None = None,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        store: Backend | None = None,
    ) -> None:
        self.loaders = dict(loaders)
        self.store: Backend = store if store is not None else MemoryBackend()
        """Where the plug-ins' stores keep their entries (``ctx.store``); memory unless the
        host chooses (the server: SQLite beside the manifest)."""
        self.root_path = root_path.rstrip("/")
        self.registry = registry
        self.registry_token = registry_token
        self.max_body_size = max_body_size
        self.base_dir: Path | None = None
        self._mounts: dict[str, Mount] = {}
        self._unloaded: dict[str, Mount] = {}  # plug-ins of the manifest that failed to load
        self._routes: list[Mount] = []
        self._by_prefix: dict[str, Mount] = {}
        self._subscribers: list[Callable[[], None]] = []
        self._changing = asyncio.Lock()
        self._loading: asyncio.Future[None] | None = None  # while a manifest loads
        self._pending: dict[str, asyncio.Future[None]] = {}  # plug-ins loading, by prefix
        self._queued: dict[str, PluginSpec] = {}  # not started yet, by prefix, next first
        self._hurry = asyncio.Event()  # a request waits for a queued plug-in
        self._last_request = 0.0  # when a request last came while plug-ins were loading
        self._deadlines = Deadlines()
        self.manifest_names: set[str] = set()
        self._shared: SharedRegistry | None = None  # the registry's changes, in the store

    # -- mounting ---------------------------------------------------------------------------

    async def load(self, manifest: Manifest, strict: bool = False) -> list[PluginLoadError]:
        """Load every plug-in of a validated manifest. Failures are logged and returned; the
        others still load. With ``strict`` the first failure unloads everything and raises."""
        self._expect(manifest)
        return await self._load_all(manifest.plugins, strict)

    def start_loading(
        self, manifest: Manifest, pause: float = 0.0, quiet: float = 0.0, patience: float = 0.0
    ) -> asyncio.Task[list[PluginLoadError]]:
        """Begin loading a validated manifest's plug-ins; the task ends as ``load`` does.

        The runtime answers at once: each plug-in mounts as soon as it has loaded, and a
        request to one still loading waits for it (as do ``/_health`` and ``/_plugins``, for
        the whole load), then gets the answer it would get after the load. So a host can
        answer its first requests before its slowest plug-in is ready.

        For a host whose plug-ins' starts compete with its answers (a browser's worker, one
        thread, two cores), three times in seconds: the first plug-in starts at once, each
        next one ``pause`` after the one before and, for up to ``patience`` from now, only
        once no request has come for ``quiet``. A request for a plug-in not started yet
        starts it next, without waiting.
        """
        self._expect(manifest)
        held = Holding(pause, quiet, asyncio.get_running_loop().time() + patience)
        return asyncio.ensure_future(self._load_all(manifest.plugins, strict=False, held=held))

    def _expect(self, manifest: Manifest) -> None:
        """Check the manifest's names and prefixes, and note its plug-ins as loading."""
        self.base_dir = manifest.base_dir
        for spec in manifest.plugins:
            self._check_free(spec)
        self.manifest_names |= {spec.name for spec in manifest.plugins}
        loop = asyncio.get_running_loop()
        self._loading = loop.create_future()
        self._pending = {spec.prefix: loop.create_future() for spec in manifest.plugins}

    async def _load_all(
        self, specs: list[PluginSpec], strict: bool, held: Holding = NOT_HELD
    ) -> list[PluginLoadError]:
        # Side by side (Deno starting, modules compiling, workers starting in the browser);
        # each mounts when it is ready, and the manifest's order is restored at the end.
        tasks: list[asyncio.Task[Mount]] = []
        stopped: BaseException | None = None
        self._queued = {spec.prefix: spec for spec in specs}
        self._last_request = asyncio.get_running_loop().time()
        try:
            while self._queued:
                spec = self._queued.pop(next(iter(self._queued)))
                tasks.append(asyncio.ensure_future(self._load_and_mount(spec)))
                if self._queued:
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
                async with self._changing:
                    for mount in loaded:
                        del self._mounts[mount.spec.name]
                    for spec in specs:
                        self._unloaded.pop(spec.name, None)
                    self._reroute()
                for mount in loaded:
                    await _close_quietly(mount)
                raise (unexpected or failures)[0]
            order = {spec.name: index for index, spec in enumerate(specs)}
            async with self._changing:
                # Plug-ins mounted before this load keep their place, first.
                ranked = sorted(self._mounts.items(), key=lambda item: order.get(item[0], -1))
                self._mounts = dict(ranked)
                self._reroute()
            for failure in failures:
                log.error("%s", failure)
            if self.registry:
                await self._follow_registry()
            return failures
        finally:
            self._queued = {}
            self._hurry.clear()  # a request that hurried the last start: nothing left to hold
            for waiting in self._pending.values():  # never started: their requests go on
                waiting.set_result(None)
            self._pending = {}
            if self._loading is not None:
                self._loading.set_result(None)
                self._loading = None

    async def _follow_registry(self) -> None:
        """Serve what the registry recorded in the store, and follow its changes."""
        if self._shared is None:
            self._shared = SharedRegistry(self)
        try:
            await self._shared.apply()
        except StoreError as exc:  # the poll tries again
            log.warning("the registry's changes cannot be read yet: %s", exc)
        if not isinstance(self.store, MemoryBackend):  # nobody else writes to this one
            self._shared.follow()

    async def _hold_next_start(self, held: Holding) -> Holding:
        """Wait before the next plug-in's start: ``held.pause``, then while requests keep
        coming (until ``held.until``). A request for a queued plug-in ends the wait. Returns
        how to hold the start after it: ``NOT_HELD`` once holding failed, so a fault in this
        courtesy never costs a plug-in its start."""
        loop = asyncio.get_running_loop()
        try:
            started = loop.time()
            await asyncio.sleep(0)  # at the least, a request that came meanwhile goes first
            while not self._hurry.is_set():
                until = max(started + held.pause, min(self._last_request + held.quiet, held.until))
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), remaining)
        except Exception:
            log.exception("holding the plug-ins' starts failed: the rest start at once")
            return NOT_HELD
        finally:
            self._hurry.clear()
        return held

    async def _load_and_mount(self, spec: PluginSpec) -> Mount:
        try:
            try:
                mount = Mount(spec, await self._load(spec))
            except PluginLoadError as failure:
                async with self._changing:
                    self._unloaded[spec.name] = Mount(spec, Unavailable(failure))
                    self._reroute(notify=False)
                raise
            async with self._changing:
                self._mounts[spec.name] = mount
                self._reroute(notify=False)  # subscribers hear once, when the load is over
            log.info("mounted %s plug-in %r at %s", spec.type, spec.name, spec.prefix)
            return mount
        finally:
            loaded = self._pending.pop(spec.prefix, None)
            if loaded is not None:
                loaded.set_result(None)

    async def _loaded(self) -> None:
        """Wait for a manifest still loading: the built-ins answer for all of it."""
        if self._loading is not None:
            await asyncio.shield(self._loading)

    async def _loaded_for(self, path: str) -> None:
        """Wait until the plug-ins still loading that could answer ``path`` have loaded (or
        failed to); those not started yet start next."""
        self._last_request = asyncio.get_running_loop().time()
        for prefix, loaded in list(self._pending.items()):
            if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
                if prefix in self._queued:
                    self._queued = {prefix: self._queued.pop(prefix), **self._queued}
                    self._hurry.set()
                await asyncio.shield(loaded)

    async def add(self, spec: PluginSpec) -> Mount:
        """Load and mount one plug-in. Raises ``ManifestError`` on a taken name or prefix and
        ``PluginLoadError`` when its code cannot be loaded; nothing is mounted then."""
        async with self._changing:
            self._check_free(spec)
            plugin = await self._load(spec)
            mount = Mount(spec, plugin)
            self._mounts[spec.name] = mount
            self._drop_unloaded(spec)
            self._reroute()
        log.info("mounted %s plug-in %r at %s", spec.type, spec.name, spec.prefix)
        return mount

    async def remove(self, name: str) -> PluginSpec:
        """Unmount a plug-in (or forget one that failed to load) and release what it holds.
        Raises ``KeyError`` if unknown."""
        async with self._changing:
            mount = self._mounts.pop(name, None) or self._unloaded.pop(name)
            self._reroute()
        await _close_quietly(mount)
        await release(self, name)
        log.info("removed plug-in %r", name)
        return mount.spec

    @property
    def plugins(self) -> list[PluginSpec]:
        return [mount.spec for mount in self._mounts.values()]

    @property
    def failures(self) -> list[PluginLoadError]:
        """The manifest's plug-ins that failed to load and were not replaced since."""
        return [mount.plugin.failure for mount in self._unloaded.values()]  # type: ignore[attr-defined]

    def _drop_unloaded(self, spec: PluginSpec) -> None:
        """A plug-in now mounted replaces a failed one of its name or at its prefix."""
        for name, failed in list(self._unloaded.items()):
            if name == spec.name or failed.spec.prefix == spec.prefix:
                del self._unloaded[name]

    @property
    def intercept_prefixes(self) -> list[str]:
        """Every path prefix this runtime answers, with ``root_path``: what a service worker
        should intercept."""
        loading = [prefix for prefix in self._pending if prefix not in self._by_prefix]
        return intercept_prefixes(
            self.root_path, [*(m.spec.prefix for m in self._routes), *loading], self.registry
        )

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after the set of mounted plug-ins changes."""
        self._subscribers.append(callback)

    async def close(self) -> None:
        """Unmount every plug-in and close them side by side: a shut-down takes as long as the
        slowest plug-in's, each bounded by its loader (an app's lifespan by its timeout)."""
        if self._shared is not None:
            await self._shared.stop()
        mounts, self._mounts = list(self._mounts.values()), {}
        self._unloaded = {}
        self._reroute()
        await asyncio.gather(*(_close_quietly(mount) for mount in mounts))
        await release(self)
        try:
            await self.store.close()
        except Exception:
            log.exception("closing the store %s failed", self.store.description)

    def _check_free(self, spec: PluginSpec) -> None:
        if spec.name in self._mounts:
            raise ManifestError(
                f"a plug-in named {spec.name!r} is already mounted", spec.name, "name"
            )
        for mount in self._mounts.values():
            if mount.spec.prefix == spec.prefix:
                raise ManifestError(
                    f"prefix {spec.prefix!r} is already used by plug-in {mount.spec.name!r}",
                    spec.name,
                    "prefix",
                )

    async def _load(self, spec: PluginSpec) -> Plugin:
        loader = self.loaders.get(spec.type)
        if loader is None:
            raise PluginLoadError(
                spec.name,
                f"type {spec.type!r} is not supported by this host "
                f"(supported: {', '.join(sorted(self.loaders))})",
            )
        calling = CALLING.set(Calling(self, spec))  # its client works in on_create too
        try:
            with loading_with(self.store_for(spec)):
                return await loader(spec)
        except PluginLoadError:
            await release(self, spec.name)
            raise
        except LOAD_FAILURES as exc:
            log.exception("loading plug-in %r failed", spec.name)
            await release(self, spec.name)
            raise PluginLoadError(spec.name, f"{type(exc).__name__}: {exc}") from exc
        finally:
            CALLING.reset(calling)

    def store_for(self, spec: PluginSpec) -> Store:
        """The store a plug-in sees: its namespace of the runtime's backend."""
        return Store(self.store, spec.namespace)

    def _reroute(self, notify: bool = True) -> None:
        # A failed plug-in's prefix routes to its 503, unless a mounted plug-in took it.
        by_prefix = {mount.spec.prefix: mount for mount in self._mounts.values()}
        for mount in self._unloaded.values():
            by_prefix.setdefault(mount.spec.prefix, mount)
        self._routes = sorted(by_prefix.values(), key=lambda m: len(m.spec.prefix), reverse=True)
        self._by_prefix = {mount.spec.prefix: mount for mount in self._routes}
        if not notify:
            return
        for callback in self._subscribers:
            try:
                callback()
            except Exception:
                log.exception("a runtime subscriber failed")

    # -- answering --------------------------------------------------------------------------

    async def handle(
        self, message: RequestMessage, read_body: BodyReader | None = None
    ) -> ResponseMessage:
        """Answer one wire request. A host may pass ``read_body`` instead of a body: it is
        called only once the request is known to reach a plug-in or the registry's login has
        passed, so nobody can make the host read bodies it would throw away."""
        started = time.perf_counter()
        origin, full_path, query = _split_url(message["url"])
        request_id = _header(message["headers"], "x-request-id")
        correlation_id = request_id or new_request_id()
        # The path as sent (percent-encoded), below the root path; routing decodes it.
        raw_path = full_path[len(self.root_path) :] or "/"
        path = _decoded(raw_path)
        mount: Mount | None = None
        body = message.get("body") or None  # an empty body is no body, in both hosts

        if (self.root_path and not full_path.startswith(self.root_path)) or path[0] != "/":
            response = error_message(404, f"no plug-in is mounted at {full_path!r}")
        elif body is not None and len(body) > self.max_body_size:
            response = self.too_large()
        elif path == "/_health":
            await self._loaded()
            response = self._health()
        elif path == "/_plugins" or path.startswith("/_plugins/"):
            await self._loaded()
            response = await self._registry(message, path, read_body)
        else:
            if self._pending:
                await self._loaded_for(path)
            mount = self._route(path)
            if mount is None:
                response = error_message(404, f"no plug-in is mounted at {raw_path!r}")
            else:
                failed = await self._receive(message, read_body) if read_body else None
                response = failed or await self._call(
                    mount,
                    message,
                    origin,
                    raw_path,
                    path,
                    query,
                    message.get("body") or None,
                    correlation_id,
                    request_id,
                )
        if message["method"].upper() == "HEAD":
            if isinstance(response["body"], Stream):
                await response["body"].aclose()
            response["body"] = b""  # the answer a GET would get, without its body
        return self.finish(message, response, correlation_id, mount, started)

    async def _receive(
        self, message: RequestMessage, read_body: BodyReader | None
    ) -> ResponseMessage | None:
        """Read the body now, if the host left it to us; the error answer if that failed."""
        if read_body is None:
            return None
        try:
            message["body"] = await read_body()
        except BodyError as exc:
            return error_message(exc.status, exc.detail)
        return None

    def plugin_at(self, full_path: str) -> tuple[Mount, str, str] | None:
        """The mount a request for ``full_path`` reaches, with its path below the root path as
        sent and decoded (as ``handle`` routes it); None when ``handle`` answers it itself (a
        built-in, nothing mounted there). For a host that passes some requests straight on."""
        raw_path = full_path[len(self.root_path) :] or "/"
        path = _decoded(raw_path)
        # What handle() answers before routing: outside the root path, the built-ins.
        if (self.root_path and not full_path.startswith(self.root_path)) or path[0] != "/":
            return None
        if path == "/_health" or path == "/_plugins" or path.startswith("/_plugins/"):
            return None
        mount = self._route(path)
        return None if mount is None else (mount, raw_path, path)

    def too_large(self) -> ResponseMessage:
        """The 413 answer, also for a host that stops reading a body past the limit."""
        return error_message(
            413, f"request body is larger than the limit of {self.max_body_size} bytes"
        )

    def finish(
        self,
        message: RequestMessage,
        response: ResponseMessage,
        correlation_id: str | None = None,
        mount: Mount | None = None,
        started: float | None = None,
    ) -> ResponseMessage:
        """Add Valor's headers to an answer and write its access-log line. Hosts call it for
        answers they give themselves (a body too large to read), so those look the same."""
        if correlation_id is None:
            correlation_id = _header(message["headers"], "x-request-id") or new_request_id()
        response["headers"].append(["x-correlation-id", correlation_id])
        if mount is not None:
            response["headers"].append(["x-valor-plugin", mount.spec.name])
        if access_log.isEnabledFor(logging.INFO):
            name = mount.spec.name if mount else "-"
            path = _split_url(message["url"])[1]
            log_access(name, response["status"], message["method"], path, started, correlation_id)
        return response

    def _route(self, path: str) -> Mount | None:
        # Walk up the path one segment at a time: the first mounted prefix is the longest.
        candidate = path
        while True:
            mount = self._by_prefix.get(candidate)
            if mount is not None or candidate == "/":
                return mount
            candidate = candidate[: candidate.rfind("/")] or "/"

    async def _call(
        self,
        mount: Mount,
        message: RequestMessage,
        origin: str,
        raw_path: str,
        path: str,
        query: str,
        body: bytes | None,
        correlation_id: str,
        request_id: str | None,
    ) -> ResponseMessage:
        spec = mount.spec
        root_path = message.get("root_path", "")
        plugin = mount.plugin
        handle_forwarded = getattr(plugin, "handle_forwarded", None)
        if handle_forwarded is None:
            headers = self.forwarded_headers(
                message["headers"], spec, correlation_id, request_id, root_path
            )
        else:  # the client's headers; the rest beside them (an ASGI app's scope)
            headers = message["headers"]
        method = message["method"].upper()
        forwarded: RequestMessage = {
            "url": origin + _below(raw_path, path, spec.prefix) + query,
            # HEAD reaches every kind of plug-in as GET; handle() drops the body.
            "method": "GET" if method == "HEAD" else method,
            "headers": headers,
            "body": body,
        }
        deadlines = self._deadlines
        task = deadlines.start(spec.timeout)
        stream = None
        # For its calls out: who calls (and whose call this is, for a sibling's), with what id.
        calling = CALLING.set(Calling(self, spec, correlation_id, origin, CALLING.get()))
        try:
            if handle_forwarded is None:
                answer = await plugin.handle(forwarded)
            else:
                prefix = self.forwarded_prefix(spec, root_path)
                forwarding = Forwarding(correlation_id, prefix, message.get("client"))
                answer = await handle_forwarded(forwarded, forwarding)
            stream = streamed(answer)
            if stream is not None:
                await stream.start()  # its first part, under the plug-in's timeout
        except BaseException as exc:
            expired = deadlines.stop(task)
            if stream is not None:
                await stream.aclose()
            return self.failure_answer(spec, exc, expired)
        finally:
            CALLING.reset(calling)
        if deadlines.stop(task):  # it caught its cancellation and answered late anyway
            if stream is not None:
                await stream.aclose()
            return self._timed_out(spec)
        try:
            response = http_answer(response_message(answer), drop=_NOT_FROM_PLUGINS)
        except WireError as exc:
            if stream is not None:
                await stream.aclose()
            return self._failed(spec, exc)
        if stream is not None:  # the rest of its parts, each within the plug-in's timeout
            response["body"] = watched(stream, spec.name, spec.timeout, deadlines)  # type: ignore[typeddict-item]
        return response

    def forwarded_headers(
        self,
        headers: list[list[str]],
        spec: PluginSpec,
        correlation_id: str,
        request_id: str | None,
        root_path: str = "",
    ) -> list[list[str]]:
        """The request headers a plug-in gets: a new list (the host's stays as it came), in
        ``fetch()``'s order, with its request id and the prefix it is mounted at. A client's
        x-forwarded-prefix is dropped: the prefix a plug-in builds links with (a Location) is
        the runtime's, never the client's."""
        forwarded = _fetch_order(headers, drop="x-forwarded-prefix")
        if not request_id:
            forwarded.append(["x-request-id", correlation_id])
        forwarded.append(["x-forwarded-prefix", self.forwarded_prefix(spec, root_path)])
        return forwarded

    def forwarded_prefix(self, spec: PluginSpec, root_path: str = "") -> str:
        """The path a plug-in is mounted at, as its requests' x-forwarded-prefix gives it:
        under the ASGI server's ``root_path`` (a proxy's prefix) and the runtime's own."""
        return root_path.rstrip("/") + self.root_path + spec.prefix.rstrip("/")

    def failure_answer(
        self, spec: PluginSpec, exc: BaseException, expired: bool
    ) -> ResponseMessage:
        """The answer for a plug-in call that raised ``exc`` before answering (called while
        handling it); ``expired``: its deadline had passed. Re-raises what is not a failure
        of the plug-in's (the host's own cancellation, KeyboardInterrupt)."""
        if isinstance(exc, DeadlineExceeded) or (
            expired and isinstance(exc, asyncio.CancelledError)
        ):
            return self._timed_out(spec)
        if not isinstance(exc, Exception):
            raise exc
        return self._failed(spec, exc)

    def _timed_out(self, spec: PluginSpec) -> ResponseMessage:
        log.warning("plug-in %r did not answer within %gs", spec.name, spec.timeout)
        return error_message(
            504, f"plug-in {spec.name!r} did not answer within {spec.timeout:g} seconds"
        )

    def _failed(self, spec: PluginSpec, exc: Exception) -> ResponseMessage:
        """The answer for a plug-in that raised ``exc`` (called while handling it)."""
        if isinstance(exc, TimeoutError):  # its own, say an upstream's: the same 504
            return self._timed_out(spec)
        if isinstance(exc, PluginFailed):  # a trap, an exit code, a bad answer, no upstream
            return exc.answer()
        if isinstance(exc, StoreUnavailable):  # 503, or 507 when it is full
            log.error("plug-in %r: %s", spec.name, exc)
            return error_message(exc.status, f"plug-in {spec.name!r}: {exc}", store=exc.store)
        if isinstance(exc, PluginBusy):
            log.warning("%s", exc)
            return error_message(503, str(exc))
        if isinstance(exc, PluginCrashed):
            # Why it crashed (its last stderr line, its error's message) may quote a secret:
            # it goes to the log, under the error id the client gets, as a 500's traceback.
            error_id = os.urandom(6).hex()
            log.error("plug-in %r crashed: %s [error_id=%s]", spec.name, exc, error_id)
            return error_message(502, f"plug-in {spec.name!r} crashed", error_id=error_id)
        if isinstance(exc, WireError):
            return self._failure(spec, f"plug-in {spec.name!r} answered an invalid response: {exc}")
        return self._failure(spec, f"plug-in {spec.name!r} raised an error")

    def _failure(self, spec: PluginSpec, detail: str) -> ResponseMessage:
        error_id = os.urandom(6).hex()
        log.exception("%s [error_id=%s]", detail, error_id)
        return error_message(500, detail, error_id=error_id)

    def _health(self) -> ResponseMessage:
        """``/_health``: the host answers; how many plug-ins are mounted, and which failed."""
        failed = [
            {"name": mount.spec.name, "prefix": mount.spec.prefix, "error": str(failure)}
            for mount, failure in zip(self._unloaded.values(), self.failures, strict=True)
        ]
        return _json(
            200,
            {
                "status": "ok",
                "plugins": len(self._mounts),
                "failed": failed,
                "store": self.store.description,
            },
        )

    # -- the /_plugins registry ---------------------------------------------------------------

    async def _registry(
        self, message: RequestMessage, path: str, read_body: BodyReader | None = None
    ) -> ResponseMessage:
        if not self.registry:
            return error_message(
                404, "the plug-in registry is not enabled (start the host with the registry on)"
            )
        if self.registry_token is not None:
            given = _header(message.get("headers") or [], "authorization") or ""
            expected = f"Bearer {self.registry_token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                answer = error_message(401, "the registry needs 'Authorization: Bearer <token>'")
                answer["headers"].append(["www-authenticate", "Bearer"])
                return answer
        failed = await self._receive(message, read_body)
        if failed is not None:
            return failed
        method = message["method"].upper()
        if method == "HEAD":  # as for plug-ins: a GET whose body handle() drops
            method = "GET"
        name = path[len("/_plugins/") :] if path.startswith("/_plugins/") else ""
        if method == "GET" and not name:
            return _json(200, {"plugins": [spec.describe() for spec in self.plugins]})
        if method == "GET":
            mount = self._mounts.get(name)
            if mount is None:
                return error_message(404, f"no plug-in named {name!r}")
            return _json(200, mount.spec.describe())
        if method == "POST" and not name:
            return await self._register(message.get("body") or b"")
        if method == "DELETE" and name:
            return await self._unregister(name)
        allowed = "GET, POST" if not name else "GET, DELETE"
        answer = error_message(405, f"{method} is not allowed on {path} (allowed: {allowed})")
        answer["headers"].append(["allow", allowed])
        return answer

    async def _register(self, body: bytes) -> ResponseMessage:
        try:
            definition = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_message(400, f"the plug-in definition is not valid JSON: {exc}")
        except RecursionError:
            return error_message(400, "the plug-in definition is nested too deeply")
        base_dir = self.base_dir or Path.cwd()
        try:
            spec = parse_plugin(definition, base_dir, where="plug-in definition")
        except ManifestError as exc:
            return error_message(400, str(exc), field=exc.field)
        if spec.path is not None and not spec.path.is_relative_to(base_dir.resolve()):
            return error_message(
                400,
                f"plug-in {spec.name!r}: 'path' must be a file inside the manifest's folder",
                field="path",
            )
        async with self._registry_turn():
            try:
                await self.add(spec)
            except ManifestError as exc:
                return error_message(409, str(exc), field=exc.field)
            except PluginLoadError as exc:
                field_name = "path" if spec.path is not None else "url"
                detail = f"plug-in {spec.name!r}: {field_name!r} could not be loaded: {exc.reason}"
                return error_message(400, detail, field=field_name)
            if self._shared is not None:
                try:
                    await self._shared.added(spec.name, spec.source)
                except StoreError as exc:  # not recorded: not added
                    await self.remove(spec.name)
                    return _store_failure(exc)
        return _json(201, spec.describe())

    async def _unregister(self, name: str) -> ResponseMessage:
        async with self._registry_turn():
            if name not in self._mounts:
                return error_message(404, f"no plug-in named {name!r}")
            if self._shared is not None:
                try:
                    await self._shared.removed(name, name in self.manifest_names)
                except StoreError as exc:  # not recorded: not removed
                    return _store_failure(exc)
            spec = await self.remove(name)
        return _json(200, {"removed": spec.name})

    def _registry_turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Changes through /_plugins one at a time with the registry's polls."""
        if self._shared is None:
            return contextlib.nullcontext()
        return self._shared.lock


# Request ids need to be unique, not secret: a seeded PRNG is several times cheaper than
# os.urandom, which is a system call per request.
_ids = random.Random(os.urandom(32))


def intercept_prefixes(root_path: str, prefixes: list[str], registry: bool) -> list[str]:
    """The built-ins' and ``prefixes`` under ``root_path``: what a service worker intercepts."""
    builtins = ["/_health", *(["/_plugins"] if registry else [])]
    return [root_path + p if p != "/" else root_path + "/" for p in [*builtins, *prefixes]]


def reseed_request_ids() -> None:
    """Give the request-id generator a fresh seed (after a boot from a memory snapshot)."""
    _ids.seed(os.urandom(32))


def new_request_id() -> str:
    """A random 128-bit id as 32 hex digits, for a request that came without one."""
    return _ids.getrandbits(128).to_bytes(16, "big").hex()


def log_access(
    plugin: str,
    status: int,
    method: str,
    path: str,
    started: float | None,
    correlation_id: str,
) -> None:
    """Write an answer's access-log line (when ``valor.access`` logs at INFO)."""
    elapsed = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    access_log.info(
        "%s %d %s %s %.1fms %s", plugin, status, method, _printable(path), elapsed, correlation_id
    )


def _split_url(url: str) -> tuple[str, str, str]:
    """``(origin, path, "?query")`` of an absolute URL or a bare path; the fragment dropped."""
    url = url.partition("#")[0]
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3) if scheme_end >= 0 else 0
    if path_start < 0:
        path_start = len(url)
    origin, rest = url[:path_start], url[path_start:]
    path, mark, query = rest.partition("?")
    return origin, path or "/", mark + query


def _decoded(raw_path: str) -> str:
    """The path percent-decoded for routing, except ``%2F``: an encoded slash is part of a
    segment's name, never a separator (RFC 3986), so it cannot reach another mount."""
    if "%" not in raw_path:
        return raw_path
    return unquote(raw_path.replace("%2F", "%252F").replace("%2f", "%252f"))


def _below(raw_path: str, path: str, prefix: str) -> str:
    """``raw_path`` without the segments of the mount ``prefix`` that matched ``path`` (its
    decoded form)."""
    if path is raw_path:  # nothing was decoded
        return (path[len(prefix) :] if prefix != "/" else path) or "/"
    end = 0
    for _ in range(prefix.count("/") if prefix != "/" else 0):
        end = raw_path.find("/", end + 1)
        if end < 0:
            return "/"
    return raw_path[end:] or "/"


def _fetch_order(headers: Any, drop: str) -> list[list[str]]:
    """Request headers as ``fetch()`` hands them to a service worker: names in lower case,
    sorted, a repeated name's values joined by ``", "`` in order (``"; "`` for ``cookie``),
    without the header named ``drop``. RFC 9110 (5.3) lets a recipient combine them so; doing
    it in both hosts gives a plug-in the same list wherever it runs."""
    pairs = sorted(
        [[lower, value] for name, value in headers if (lower := name.lower()) != drop], key=_first
    )
    if len({name for name, _ in pairs}) == len(pairs):
        return pairs  # no name repeats, the usual case
    combined: list[list[str]] = []
    for pair in pairs:
        if combined and combined[-1][0] == pair[0]:
            separator = "; " if pair[0] == "cookie" else ", "
            combined[-1][1] = combined[-1][1] + separator + pair[1]
        else:
            combined.append(pair)
    # Joined values are trimmed, as Chromium trims them (two empty ones are ",").
    for pair in combined:
        pair[1] = pair[1].strip(" \t")
    return combined


_first = itemgetter(0)

# Set by the runtime only, once, on every answer; framing is each host's own (content-length
# of the bytes it sends). A plug-in's copies of these are dropped.
_NOT_FROM_PLUGINS = frozenset(
    [
        "x-correlation-id",
        "x-valor-plugin",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
    ]
)


def _printable(text: str) -> str:
    """``text`` for a log line: control characters escaped, so a request cannot forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _header(headers: Any, name: str) -> str | None:
    size = len(name)
    for key, value in headers:
        if len(key) == size and key.lower() == name:  # the length first spares most lower()s
            return value
    return None


def _json(status: int, body: Any) -> ResponseMessage:
    return {
        "status": status,
        "headers": [["content-type", JSON]],
        "body": json.dumps(body).encode(),
    }


def _store_failure(exc: StoreError) -> ResponseMessage:
    if isinstance(exc, StoreUnavailable):
        return error_message(exc.status, f"the registry: {exc}", store=exc.store)
    return error_message(500, f"the registry could not record the change: {exc}")


async def _close_quietly(mount: Mount) -> None:
    try:
        await mount.plugin.close()
    except Exception:
        log.exception("closing plug-in %r failed", mount.spec.name)
