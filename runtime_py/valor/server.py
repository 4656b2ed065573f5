"""The server host: an ASGI app that answers HTTP with a ``Runtime`` (CPython only)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import secrets
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from .asgi_http import (
    BODY_FOLLOWS,
    BodyTooLarge,
    Receive,
    RequestBody,
    Scope,
    Send,
    has_body,
    request_url,
    response_events,
    send_parts,
)
from .kinds import Loader, server_loaders
from .manifest import load_manifest
from .passthrough import PassThrough
from .responses import error_message
from .runtime import DEFAULT_MAX_BODY_SIZE, Runtime
from .status import REASONS
from .store.urls import default_url, open_backend

log = logging.getLogger("valor")
DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a request body may go without a byte arriving (408 past it), as nginx's
``client_body_timeout``."""

_HTTP_1 = frozenset(["1.0", "1.1"])  # without Content-Length nor Transfer-Encoding, no body
_ORIGINS_MAX = 256

SERVER_LOADERS: dict[str, Loader] = server_loaders()
"""Every plug-in kind the server host can load."""


class ValorApp:
    """ASGI app. Loads the manifest at lifespan start-up (or on the first request under a
    server that does not run lifespan)."""

    def __init__(
        self,
        runtime: Runtime,
        manifest_path: str | Path | None,
        strict: bool,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        passthrough: bool = True,
        store_url: str | None = None,
        root_path: str = "",
    ) -> None:
        self.runtime = runtime
        self.store_url = store_url
        self.manifest_path = manifest_path
        self.strict = strict
        self.body_timeout = body_timeout
        self.root_path = root_path.rstrip("/")
        self._loaded = False
        self._origins: dict[tuple[str, bytes | None], str] = {}  # by scheme and Host
        self._loading: asyncio.Future[None] | None = None
        # Requests to asgi plug-ins skip the wire message: the app gets this exchange.
        self._passthrough = (
            PassThrough(runtime, body_timeout, self.root_path) if passthrough else None
        )

    async def startup(self) -> None:
        """Load the manifest once; requests that come while it loads wait for it."""
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        if self.manifest_path is not None:
            manifest = load_manifest(self.manifest_path)
            if self.store_url is None:  # --store, else the manifest's, else SQLite beside it
                url = manifest.store or default_url(manifest.base_dir)
                self.runtime.store = open_backend(url, manifest.base_dir)
            log.info("store: %s", self.runtime.store.description)
            await self.runtime.load(manifest, strict=self.strict)
        self._loaded = True

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Not a coroutine function (marked as one below): a request to an ``asgi`` plug-in is
        # its call's own coroutine, one coroutine less per request; any other, _answer's.
        if self._loaded and scope["type"] == "http":
            passthrough = self._passthrough
            if passthrough is not None and passthrough.active:
                call = passthrough.call(scope, receive, send)
                if call is not None:
                    return call.run()
            return self._answer(scope, receive, send)
        return self._serve(scope, receive, send)

    # Servers tell an ASGI 3 app by its coroutine function __call__ (uvicorn, by asyncio's or
    # inspect's iscoroutinefunction): this one hands back a coroutine, as those do.
    if sys.version_info >= (3, 12):
        __call__ = inspect.markcoroutinefunction(__call__)
    else:
        __call__._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Lifespan, and the first request under a server that does not run it."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self._lifespan(receive, send)
            return
        if not self._loaded:
            await self.startup()
        passthrough = self._passthrough
        if passthrough is not None and passthrough.active:
            call = passthrough.call(scope, receive, send)
            if call is not None:
                await call.run()
                return
        await self._answer(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP request's answer through the runtime (the message path)."""
        # The request path, inline: each coroutine call costs more than most of its steps
        # (and a loop less than a comprehension, a function call of its own on Python 3.11).
        runtime = self.runtime
        raw = scope["headers"]
        headers = []
        for name, value in raw:
            headers.append([name.decode("latin-1"), value.decode("latin-1")])
        # The usual request, each header once, no body, a known Host: request_url's and
        # has_body's work from one dict (C), without their calls.
        named = dict(raw)
        origin = self._origins.get((scope.get("scheme", "http"), named.get(b"host")))
        raw_path = scope.get("raw_path")
        if (
            origin is not None
            and raw_path
            and not scope.get("root_path")
            and len(named) == len(raw)
            and b"content-length" not in named
            and b"transfer-encoding" not in named
            and scope.get("http_version") in _HTTP_1
        ):
            path = raw_path.decode("latin-1")
            query = scope.get("query_string")
            query = "?" + query.decode("latin-1") if query else ""
            url = origin + path + query
            # The runtime splits the URL again unless given its parts: those split_url would
            # give (a path from its first slash, without a query or a fragment).
            parts = (
                (origin, path, query)
                if path[0] == "/" and "#" not in url and "?" not in path
                else None
            )
            bad_host = None
            framed = False
        else:
            url, bad_host = request_url(scope)
            parts = None
            framed = None  # has_body says
            self._learn_origin(scope, named.get(b"host"), bad_host)
        method = scope["method"]
        client = scope.get("client")
        message = {
            "url": url,
            "method": method,
            "headers": headers,
            "body": None,
            "root_path": scope.get("root_path") or self.root_path,
            "client": (client[0], client[1]) if client else None,
        }
        head = method == "HEAD"
        if bad_host is not None:
            # Routing never looks at Host, but the origin a plug-in sees must be a real one.
            detail = f"the Host header {bad_host!r} is not a valid host[:port]"
            start, body = response_events(runtime.finish(message, error_message(400, detail)), head)
            await send(start)
            await send(body)
            return
        # The body is read only once the runtime knows who will use it (see Runtime.handle).
        reader = None
        try:
            if framed is None and has_body(scope, headers, runtime.max_body_size):
                reader = RequestBody(receive, runtime.max_body_size, self.body_timeout)
        except BodyTooLarge:
            response = runtime.finish(message, runtime.too_large())
            unread = True
        else:
            response = await runtime.handle(message, reader, parts)
            unread = reader is not None and not reader.complete
        start, body = response_events(response, head, unread)
        if type(response["body"]) is bytes:
            start[BODY_FOLLOWS] = True
            await send(start)
            await send(body)
        else:
            await send(start)
            await send_parts(response["body"], send, receive)

    def _learn_origin(self, scope: Scope, host: bytes | None, bad_host: str | None) -> None:
        """Remember the origin a valid Host header gives, for the usual request (bounded)."""
        if host is not None and bad_host is None and len(self._origins) < _ORIGINS_MAX:
            scheme = scope.get("scheme", "http")
            self._origins[(scheme, host)] = f"{scheme}://{host.decode('latin-1')}"

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _quiet_accept_errors(asyncio.get_running_loop())
                try:
                    await self.startup()
                except Exception as exc:
                    log.error("%s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(
    manifest: str | Path | None = None,
    *,
    registry: bool = False,
    token: str | None = None,
    strict: bool = False,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    loaders: dict[str, Loader] | None = None,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    passthrough: bool = True,
    store: str | None = None,
    root_path: str = "",
) -> ValorApp:
    """Build the ASGI app for a manifest: by default ``$VALOR_MANIFEST``, else
    ``plugins/plugins.json``, so ``uvicorn --factory valor.server:create_app`` serves it.

    With ``registry`` on, ``/_plugins`` requires ``Authorization: Bearer <token>``; without a
    ``token`` one is generated and logged. With ``passthrough`` off, ``asgi`` plug-ins are
    answered through the wire message, as in the browser host (``valor.passthrough``), for
    comparisons. ``root_path`` is the prefix a proxy serves the app under (and strips), as
    uvicorn's ``--root-path``: plug-ins see it in their ``x-forwarded-prefix`` and an ASGI
    app in its ``root_path``; an ASGI server's own ``root_path`` for the request wins.

    ``store`` is the plug-ins' store URL (``memory:``, ``sqlite:///PATH``, ``redis://...``);
    by default the manifest's ``store``, else ``valor-store.sqlite3`` beside the manifest.
    """
    if manifest is None:
        manifest = os.environ.get("VALOR_MANIFEST", "plugins/plugins.json")
    if registry and token is None:
        token = secrets.token_urlsafe(24)
        log.warning("registry enabled; its bearer token for this run is %s", token)
    runtime = Runtime(
        loaders if loaders is not None else SERVER_LOADERS,
        registry=registry,
        registry_token=token if registry else None,
        max_body_size=max_body_size,
        store=open_backend(store, Path.cwd()) if store else None,
    )
    use_runtime_reasons()
    return ValorApp(runtime, manifest, strict, body_timeout, passthrough, store or None, root_path)


def _quiet_accept_errors(loop: asyncio.AbstractEventLoop) -> None:
    """Log running out of file descriptors once a minute instead of thousands of times a
    second: CPython 3.11's accept loop retries and logs up to ``backlog`` times per wake-up."""
    if loop.get_exception_handler() is not None:
        return
    last = [-60.0, 0]  # when the last line was written, how many were skipped since

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") != "socket.accept() out of system resource":
            loop.default_exception_handler(context)
            return
        now = loop.time()
        if now - last[0] < 60:
            last[1] += 1
            return
        log.error(
            "cannot accept connections: %s (%d more since the last time); see --limit-concurrency"
            " and --timeout-headers",
            context.get("exception"),
            last[1],
        )
        last[0], last[1] = now, 0

    loop.set_exception_handler(handle)


def use_runtime_reasons() -> None:
    """Have uvicorn's status lines carry the runtime's reason phrases (``valor.status``), as
    the browser host's answers do. ASGI has no field for a reason; uvicorn takes it from the
    running Python's ``http.HTTPStatus``, whose phrases change between versions."""
    from uvicorn.protocols.http import h11_impl

    for status in h11_impl.STATUS_PHRASES:
        h11_impl.STATUS_PHRASES[status] = REASONS.get(status, "").encode()
    try:
        from uvicorn.protocols.http import httptools_impl
    except ImportError:  # httptools is optional
        return
    for status in httptools_impl.STATUS_LINE:
        line = f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
        httptools_impl.STATUS_LINE[status] = line.encode()
