"""``Runtime``: mounts plug-ins under prefixes and answers wire requests, in either host.

A façade over one module per concept: ``routing`` (the mount table, URLs), ``loading``
(staged start-up), ``failures`` (exceptions become answers), ``access`` (request ids, the
access log), ``builtins`` (``/_health``, ``/_plugins``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from .access import access_log, log_access, new_request_id
from .builtins import Builtin, Health, Registry, receive
from .deadlines import Deadlines
from .errors import PluginLoadError
from .failures import failure_answer, timed_out
from .headers import first_value
from .kinds import Forwarding, Loader, Plugin
from .loading import Holding, StagedStart, close_quietly, load_plugin
from .manifest import Manifest, PluginSpec
from .outbound import CALLING, Calling, release
from .responses import error_message
from .routing import Mount, MountTable, below, builtin_at, decoded, fetch_order, split_url
from .routing import intercept_prefixes as intercept_prefixes
from .store import MemoryBackend, Store
from .store.backend import Backend
from .stream_watch import watched
from .streaming import Stream, streamed
from .wire import RequestMessage, ResponseMessage, WireError, checked_answer

DEFAULT_MAX_BODY_SIZE = 10 * 1024 * 1024
_FAILED = object()  # a plug-in's call that raised, already answered
_new_tuple = tuple.__new__

log = logging.getLogger("valor")

BodyReader = Callable[[], Awaitable["bytes | None"]]
"""Reads a request's body for a host that reads it late; raises ``BodyError``."""

NOT_FROM_PLUGINS = frozenset(
    [
        "x-correlation-id",
        "x-valor-plugin",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
    ]
)
"""Headers set by the runtime only, once, on every answer; framing is each host's own
(content-length of the bytes it sends). A plug-in's copies of these are dropped."""


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
        self.manifest_names: set[str] = set()
        self.table = MountTable()
        self.changing = asyncio.Lock()  # mounts change one at a time
        self.starting = StagedStart(self)
        self.deadlines = Deadlines()
        self._subscribers: list[Callable[[], None]] = []
        # The built-ins, as the original Valor's with_health() and with_registry().
        self._registry = Registry(self, registry, registry_token)
        self.builtins: dict[str, Builtin] = {}
        self.with_builtin(Health(self))
        self.with_builtin(self._registry)

    def with_builtin(self, builtin: Builtin) -> None:
        """Mount a plug-in of the runtime's own at its prefix, which starts with ``/_``: the
        manifest keeps plug-ins off those, and routing looks for built-ins only there."""
        if not builtin.prefix.startswith("/_") or "/" in builtin.prefix[1:]:
            raise ValueError(f"a built-in's prefix is one segment under /_, not {builtin.prefix!r}")
        self.builtins[builtin.prefix] = builtin

    # -- mounting ---------------------------------------------------------------------------

    async def load(self, manifest: Manifest, strict: bool = False) -> list[PluginLoadError]:
        """Load every plug-in of a validated manifest. Failures are logged and returned; the
        others still load. With ``strict`` the first failure unloads everything and raises."""
        self.starting.expect(manifest)
        return await self.starting.load_all(manifest.plugins, strict)

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
        self.starting.expect(manifest)
        held = Holding(pause, quiet, asyncio.get_running_loop().time() + patience)
        return asyncio.ensure_future(self.starting.load_all(manifest.plugins, False, held))

    async def follow_registry(self) -> None:
        """With the registry on, serve what it recorded in the store and follow its changes
        (after each manifest's load)."""
        if self.registry:
            await self._registry.follow()

    async def add(self, spec: PluginSpec) -> Mount:
        """Load and mount one plug-in. Raises ``ManifestError`` on a taken name or prefix and
        ``PluginLoadError`` when its code cannot be loaded; nothing is mounted then."""
        async with self.changing:
            self.table.check_free(spec)
            plugin = await load_plugin(self, spec)
            mount = Mount(spec, plugin, self.root_path)
            self.table.mounts[spec.name] = mount
            self.table.drop_unloaded(spec)
            self.reroute()
        log.info("mounted %s plug-in %r at %s", spec.type, spec.name, spec.prefix)
        return mount

    async def remove(self, name: str) -> PluginSpec:
        """Unmount a plug-in (or forget one that failed to load) and release what it holds.
        Raises ``KeyError`` if unknown."""
        async with self.changing:
            mount = self.table.mounts.pop(name, None) or self.table.unloaded.pop(name)
            self.reroute()
        await close_quietly(mount)
        await release(self, name)
        log.info("removed plug-in %r", name)
        return mount.spec

    @property
    def plugins(self) -> list[PluginSpec]:
        return [mount.spec for mount in self.table.mounts.values()]

    @property
    def failures(self) -> list[PluginLoadError]:
        """The manifest's plug-ins that failed to load and were not replaced since."""
        return [mount.plugin.failure for mount in self.table.unloaded.values()]  # type: ignore[attr-defined]

    @property
    def intercept_prefixes(self) -> list[str]:
        """Every path prefix this runtime answers, with ``root_path``: what a service worker
        should intercept."""
        mounted = self.table.by_prefix
        loading = [prefix for prefix in self.starting.pending if prefix not in mounted]
        return intercept_prefixes(
            self.root_path,
            [*(m.spec.prefix for m in self.table.routes), *loading],
            self.registry,
        )

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` after the set of mounted plug-ins changes."""
        self._subscribers.append(callback)

    async def close(self) -> None:
        """Unmount every plug-in and close them side by side: a shut-down takes as long as the
        slowest plug-in's, each bounded by its loader (an app's lifespan by its timeout)."""
        await self._registry.stop()
        mounts, self.table.mounts = list(self.table.mounts.values()), {}
        self.table.unloaded = {}
        self.reroute()
        await asyncio.gather(*(close_quietly(mount) for mount in mounts))
        await release(self)
        try:
            await self.store.close()
        except Exception:
            log.exception("closing the store %s failed", self.store.description)

    def store_for(self, spec: PluginSpec) -> Store:
        """The store a plug-in sees: its namespace of the runtime's backend."""
        return Store(self.store, spec.namespace)

    def reroute(self, notify: bool = True) -> None:
        """Route by the mounts as they are now; ``notify``: tell the subscribers."""
        self.table.rebuild()
        if not notify:
            return
        for callback in self._subscribers:
            try:
                callback()
            except Exception:
                log.exception("a runtime subscriber failed")

    # -- answering --------------------------------------------------------------------------

    async def handle(
        self,
        message: RequestMessage,
        read_body: BodyReader | None = None,
        url_parts: tuple[str, str, str] | None = None,
    ) -> ResponseMessage:
        """Answer one wire request. A host may pass ``read_body`` instead of a body: it is
        called only once the request is known to reach a plug-in or the registry's login has
        passed, so nobody can make the host read bodies it would throw away. A host that made
        the message's URL from its parts may pass them, as ``split_url`` gives them."""
        started = time.perf_counter()
        origin, full_path, query = url_parts or split_url(message["url"])
        request_id = first_value(message["headers"], "x-request-id")
        correlation_id = request_id or new_request_id()
        # The path as sent (percent-encoded), below the root path; routing decodes it.
        raw_path = full_path[len(self.root_path) :] or "/"
        path = decoded(raw_path)
        mount: Mount | None = None
        body = message.get("body") or None  # an empty body is no body, in both hosts
        method = message["method"].upper()

        if (self.root_path and not full_path.startswith(self.root_path)) or path[0] != "/":
            response = error_message(404, f"no plug-in is mounted at {full_path!r}")
        elif body is not None and len(body) > self.max_body_size:
            response = self.too_large()
        elif path.startswith("/_") and (builtin := builtin_at(self.builtins, path)) is not None:
            await self.starting.loaded()
            response = await builtin.answer(message, path, read_body)
        else:
            if self.starting.pending:
                await self.starting.loaded_for(path)
            mount = self.table.match(path)
            if mount is None:
                response = error_message(404, f"no plug-in is mounted at {raw_path!r}")
            elif read_body is not None and (failed := await receive(message, read_body)):
                response = failed
            else:
                # The plug-in's call, inline: a coroutine of its own cost more than most of
                # its steps. A body read late (read_body) is in the message now.
                if read_body is not None:
                    body = message.get("body") or None
                spec = mount.spec
                plugin: Plugin = mount.plugin
                handle_forwarded = mount.handle_forwarded
                root_path = message.get("root_path", "")
                # Under no ASGI server's root path (the usual case), the mount's own, no call.
                prefix = (
                    self.forwarded_prefix(mount, root_path) if root_path else mount.forwarded_prefix
                )
                # The request a plug-in gets: below its prefix, with the runtime's headers, else
                # the client's (for one that takes them beside the request: an ASGI app's scope).
                if handle_forwarded is None:
                    # In fetch()'s order, a new list (the host's stays as it came), with its
                    # request id and prefix. A client's x-forwarded-prefix is dropped: the
                    # prefix a plug-in builds links with (a Location) is the runtime's.
                    headers = fetch_order(message["headers"], drop="x-forwarded-prefix")
                    if not request_id:
                        headers.append(["x-request-id", correlation_id])
                    headers.append(["x-forwarded-prefix", prefix])
                else:
                    headers = message["headers"]
                forwarded: RequestMessage = {
                    "url": origin + below(raw_path, path, spec.prefix) + query,
                    # HEAD reaches every kind of plug-in as GET; the body is dropped below.
                    "method": "GET" if method == "HEAD" else method,
                    "headers": headers,
                    "body": body,
                }
                deadlines = self.deadlines
                task = deadlines.start(spec.timeout)
                stream = None
                # For its calls out: who calls (and whose call this is, for a sibling's), with
                # what id.
                # (A named tuple made by tuple.__new__: its own __new__ is a Python function.)
                calling = CALLING.set(
                    _new_tuple(Calling, (self, spec, correlation_id, origin, CALLING.get()))
                )
                try:
                    if handle_forwarded is None:
                        answer = await plugin.handle(forwarded)
                    else:
                        forwarding = Forwarding(correlation_id, prefix, message.get("client"))
                        answer = await handle_forwarded(forwarded, forwarding)
                    stream = streamed(answer)
                    if stream is not None:
                        await stream.start()  # its first part, under the plug-in's timeout
                except BaseException as exc:
                    expired = deadlines.stop(task)
                    if stream is not None:
                        await stream.aclose()
                    response = failure_answer(spec, exc, expired)
                    answer = _FAILED
                finally:
                    CALLING.reset(calling)
                if answer is _FAILED:
                    pass
                elif deadlines.stop(task):  # it caught its cancellation, answered late anyway
                    if stream is not None:
                        await stream.aclose()
                    response = timed_out(spec)
                elif stream is None:
                    try:
                        response = checked_answer(answer, drop=NOT_FROM_PLUGINS)
                    except WireError as exc:
                        response = failure_answer(spec, exc, False)
                else:
                    response = await self._checked_stream(spec, answer, stream)
        if method == "HEAD":
            if isinstance(response["body"], Stream):
                await response["body"].aclose()
            response["body"] = b""  # the answer a GET would get, without its body
        return self.finish(message, response, correlation_id, mount, started)

    def plugin_at(self, full_path: str) -> tuple[Mount, str, str] | None:
        """The mount a request for ``full_path`` reaches, with its path below the root path as
        sent and decoded (as ``handle`` routes it); None when ``handle`` answers it itself (a
        built-in, nothing mounted there). For a host that passes some requests straight on."""
        raw_path = full_path[len(self.root_path) :] or "/"
        path = decoded(raw_path)
        # What handle() answers before routing: outside the root path, the built-ins.
        if (self.root_path and not full_path.startswith(self.root_path)) or path[0] != "/":
            return None
        if path.startswith("/_") and builtin_at(self.builtins, path) is not None:
            return None
        mount = self.table.match(path)
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
            correlation_id = first_value(message["headers"], "x-request-id") or new_request_id()
        response["headers"].append(["x-correlation-id", correlation_id])
        if mount is not None:
            response["headers"].append(["x-valor-plugin", mount.spec.name])
        if access_log.isEnabledFor(logging.INFO):
            name = mount.spec.name if mount else "-"
            path = split_url(message["url"])[1]
            log_access(name, response["status"], message["method"], path, started, correlation_id)
        return response

    async def _checked_stream(
        self, spec: PluginSpec, answer: object, stream: Stream
    ) -> ResponseMessage:
        """A streamed answer checked (``wire.checked_answer``) once its first part has come, or
        the error it gets instead: the rest of its parts come each within the plug-in's
        timeout, unless it is refused (the stream closed)."""
        try:
            response = checked_answer(answer, drop=NOT_FROM_PLUGINS)
        except WireError as exc:
            await stream.aclose()
            return failure_answer(spec, exc, False)
        response["body"] = watched(stream, spec.name, spec.timeout, self.deadlines)  # type: ignore[typeddict-item]
        return response

    def forwarded_prefix(self, mount: Mount, root_path: str = "") -> str:
        """The path a plug-in is mounted at, as its requests' x-forwarded-prefix gives it:
        under the ASGI server's ``root_path`` (a proxy's prefix) and the runtime's own."""
        return root_path.rstrip("/") + mount.forwarded_prefix
