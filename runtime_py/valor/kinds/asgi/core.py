"""Existing ASGI 3 applications (Starlette, FastAPI, ...) as plug-ins, in both hosts.

``{"type": "asgi", "path": "app.py", "app": "app"}`` imports the module and mounts its ``app``
under the plug-in's prefix. The app runs in-process, in CPython and in Pyodide alike: each
request becomes an HTTP scope (``root_path`` the prefix, ``path`` below it), its answer a wire
response, streamed when the app sends ``more_body``. Lifespan start-up runs at load and
shut-down at close; an app that does not support lifespan works without it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from types import ModuleType
from typing import Any

from ...asgi_http import scope_headers, scope_paths
from ...asgi_http import server_address as _server
from ...errors import PluginLoadError
from ...event_loop import started_task
from ...failures import failed_after_answer, failure_answer
from ...manifest import PluginSpec
from ...store import Store, StoreError, StoreUnavailable
from ...store.loading import store_being_loaded
from ...streaming import Stream
from ...wire import RequestMessage, ResponseMessage
from .. import Forwarding
from ..python.core import describe_error, import_plugin_module

log = logging.getLogger("valor.plugins")

Message = MutableMapping[str, Any]
App = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any
]
# 2.4: ``send`` raises OSError once the client has gone, so an app streams in its own task
# (Starlette then starts no task of its own to listen for the client leaving), where the
# runtime's deadlines, watchdog included, reach it between parts.
ASGI = {"version": "3.0", "spec_version": "2.4"}
CLIENT_STAND_IN = ("127.0.0.1", 0)
"""``scope["client"]`` where the host does not know the peer (the browser, where the client is
the page itself, and an in-process test client): a loopback address, so code that parses
``request.client.host`` works, and port 0, which no real peer has."""


async def load_asgi(spec: PluginSpec) -> AsgiPlugin:
    """Import the module, find its app and run its lifespan start-up."""
    assert spec.path is not None
    module_name, colon, name = spec.source.get("app", "app").rpartition(":")
    module = import_plugin_module(spec.name, spec.path, module_name if colon else None)
    app: Any = module
    for part in name.split("."):
        app = getattr(app, part, None)
    if not callable(app):
        raise PluginLoadError(spec.name, _no_app(spec, module, name))
    store = store_being_loaded()
    if store is not None:
        answer_store_errors(app, spec)
    plugin = AsgiPlugin(app, spec, store)
    await plugin.start(spec.timeout)
    return plugin


def answer_store_errors(app: Any, spec: PluginSpec) -> None:
    """Have a Starlette or FastAPI app answer ``StoreUnavailable`` (``StoreFull``) raised
    before its answer with the store's 503 (507), as every other kind does, rather than its
    generic 500: an exception handler of Valor's, unless the app has one for it (or for
    ``StoreError``). Apps without a framework need none: what they raise before answering
    reaches the runtime, which answers it so."""
    starlette = _framework_app(app)
    if starlette is None:
        return
    handlers = starlette.exception_handlers
    if any(cls in handlers for cls in StoreUnavailable.__mro__ if issubclass(cls, StoreError)):
        return

    async def store_unavailable(request: Any, exc: StoreUnavailable) -> App:
        answer = failure_answer(spec, exc, False)  # logged there, as for any plug-in
        return _answering(answer)

    starlette.add_exception_handler(StoreUnavailable, store_unavailable)
    if getattr(starlette, "middleware_stack", None) is not None:
        starlette.middleware_stack = None  # built already (an earlier load): built again


def _framework_app(app: Any) -> Any:
    """The Starlette (or FastAPI) app ``app`` is, or wraps in middleware (``.app``), or None."""
    for _ in range(16):
        if isinstance(getattr(app, "exception_handlers", None), dict) and hasattr(
            app, "add_exception_handler"
        ):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None


def _answering(answer: ResponseMessage) -> App:
    """An ASGI app that sends ``answer`` (whole bytes)."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer["headers"]]

    async def send_answer(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": answer["status"], "headers": headers})
        await send({"type": "http.response.body", "body": answer["body"]})

    return send_answer


def _no_app(spec: PluginSpec, module: ModuleType, name: str) -> str:
    """Why ``name`` is not the module's app, and which of its names could be."""
    assert spec.path is not None
    where = f"{spec.path.name} has no ASGI application named {name!r}"
    if "app" not in spec.source:
        where += " (the default; set 'app')"
    candidates = sorted(
        key
        for key, value in vars(module).items()
        if not key.startswith("_") and _could_be_app(value, module.__name__)
    )
    return where + (f"; it has {', '.join(candidates)}" if candidates else "")


def _could_be_app(value: Any, module_name: str) -> bool:
    """An object an ``app`` could name: a callable instance (a Starlette or FastAPI app), or a
    function the module defines itself; not a class, a module or an imported function."""
    if isinstance(value, (type, ModuleType)) or inspect.isbuiltin(value):
        return False
    if inspect.isfunction(value):
        return value.__module__ == module_name
    return callable(value)


class AsgiPlugin:
    """One ASGI app: an HTTP scope per request, and its lifespan."""

    def __init__(self, app: App, spec: PluginSpec, store: Store | None = None) -> None:
        self.app = app
        self.name = spec.name
        self.timeout = spec.timeout
        # The lifespan state every request's scope gets a copy of: the plug-in's store is in
        # it (``request.state.store`` in Starlette and FastAPI).
        self.state: dict[str, Any] = {} if store is None else {"store": store}
        self._lifespan: Lifespan | None = None
        self._background: set[asyncio.Task[None]] = set()

    async def start(self, timeout: float) -> None:
        lifespan = Lifespan(self.app, self.state, self.name)
        try:
            reply = await asyncio.wait_for(lifespan.startup(), timeout)
        except TimeoutError:
            raise PluginLoadError(
                self.name, f"the app's lifespan start-up did not finish within {timeout:g} s"
            ) from None
        if reply is None:
            return  # no lifespan support: requests only
        if reply["type"] == "lifespan.startup.failed":
            detail = reply.get("message") or "no message"
            raise PluginLoadError(self.name, f"the app's lifespan start-up failed: {detail}")
        self._lifespan = lifespan

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        """Answer a request on its own (the runtime calls ``handle_forwarded``)."""
        request_id = _header(message["headers"], "x-request-id") or ""
        return await self.handle_forwarded(message, Forwarding(request_id, "", None))

    async def handle_forwarded(
        self, message: RequestMessage, forwarding: Forwarding
    ) -> ResponseMessage:
        """Answer a request the runtime forwards: the app sees the client's headers; the
        mount prefix, request id and peer reach it in the scope."""
        exchange = Exchange(message["body"] or b"", self._keep, self._report)
        exchange.run(self.app, self._scope(message, forwarding))
        status, headers, first, more = await exchange.head()
        if more:
            return {"status": status, "headers": headers, "body": exchange.stream(first)}
        exchange.finish()
        return {"status": status, "headers": headers, "body": first}

    def _keep(self, task: asyncio.Future[Any]) -> None:
        """Let an app run on after its answer (background tasks), and log how it ends."""
        self._background.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._background.discard(task)
        self._report(task)

    def _report(self, task: asyncio.Future[Any]) -> None:
        """Log how an app that had answered in full ended, if it raised."""
        if not task.cancelled() and task.exception() is not None:
            self.failed_after_answer(task.exception())  # type: ignore[arg-type]

    def failed_after_answer(self, exc: BaseException) -> None:
        """Log an error the app raised after its whole answer was sent, under an error id,
        with its traceback (the client has its answer; only the log can tell)."""
        failed_after_answer(self.name, describe_error(exc), exc)

    def _scope(self, message: RequestMessage, forwarding: Forwarding) -> Message:
        scheme, host, path, query = _split(message["url"])
        return self.http_scope(
            message["method"],
            scheme,
            scope_paths(forwarding.prefix, path),
            query.encode("latin-1"),
            scope_headers(message["headers"]),
            _server(scheme, host),
            forwarding.client,
            forwarding.request_id,
        )

    def http_scope(
        self,
        method: str,
        scheme: str,
        paths: tuple[str, bytes, str],
        query_string: bytes,
        headers: list[tuple[bytes, bytes]],
        server: tuple[str, int],
        client: tuple[str, int] | None,
        request_id: str,
    ) -> Message:
        """The HTTP scope of a request the runtime forwards; ``paths`` from ``scope_paths``,
        ``headers`` the client's (``scope_headers``). ``client`` is the peer, or
        ``CLIENT_STAND_IN`` when the host does not know it (the browser); the request id is in
        the scope's ``valor`` extension."""
        path, raw_path, root_path = paths
        return {
            "type": "http",
            "asgi": ASGI,
            "http_version": "1.1",
            "method": method,
            "scheme": scheme,
            "path": path,
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": root_path,
            "headers": headers,
            "client": client or CLIENT_STAND_IN,
            "server": server,
            "state": self.state.copy(),
            "extensions": {"valor": {"request_id": request_id}},
        }

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        if self._lifespan is not None:
            await self._lifespan.shutdown(self.name, self.timeout)


class Exchange:
    """One request's ASGI ``receive`` and ``send``, and the answer they carry.

    The app runs as a task of its own, so a streamed answer can be handed on while the app
    still sends. Parts sent with ``more_body`` wait here until taken; ``send`` returns at once
    while they hold at most ``AHEAD`` bytes, and waits for their taking past that: an app that
    streams faster than its client reads is held back, and many small parts are ready to go
    together (the browser host's pull takes every part that is ready).
    """

    AHEAD = 64 * 1024

    def __init__(
        self,
        body: bytes,
        keep: Callable[[asyncio.Future[Any]], None],
        report: Callable[[asyncio.Future[Any]], None],
    ) -> None:
        self._body: bytes | None = body
        self._keep = keep
        self._report = report
        self._app: asyncio.Future[Any] | None = None
        self._start: Message | None = None
        self._parts: deque[Message] = deque()  # sent, not yet taken
        self._held = 0  # their bytes
        self._sent_last = False
        self._ready: asyncio.Future[None] | None = None  # the reader waits for a part
        self._taken: asyncio.Future[None] | None = None  # the app waits for parts' taking
        self._gone: asyncio.Future[None] | None = None
        self._over = False  # the last part was taken

    def run(self, app: App, scope: Message) -> None:
        self._app = started_task(self._run(app, scope))

    async def _run(self, app: App, scope: Message) -> None:
        try:
            await app(scope, self.receive, self.send)
        finally:
            self._wake()  # a reader waiting for a part learns that none will come

    async def receive(self) -> Message:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        await self._gone
        return {"type": "http.disconnect"}

    async def send(self, event: Message) -> None:
        if self._gone is not None and self._gone.done():
            raise OSError("the client went away")  # as a server's send does: the app stops
        kind = event["type"]
        if kind == "http.response.start":
            if self._start is not None:
                raise RuntimeError("http.response.start was sent twice")
            self._start = event
        elif kind == "http.response.body":
            if self._start is None:
                raise RuntimeError("http.response.body was sent before http.response.start")
            if self._sent_last:
                raise RuntimeError("http.response.body was sent after the last part")
            more = event.get("more_body", False)
            self._sent_last = not more
            self._parts.append(event)
            self._held += len(event.get("body", b""))
            self._wake()
            if more and self._held > self.AHEAD:
                self._taken = asyncio.get_running_loop().create_future()
                await self._taken

    async def head(self) -> tuple[int, list[list[str]], bytes, bool]:
        """The answer's status, headers, first part and whether more parts follow."""
        try:
            event = await self._next()
        except BaseException:
            await self.close()
            raise
        assert self._start is not None
        headers = [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in self._start.get("headers", ())
        ]
        return self._start["status"], headers, bytes(event.get("body", b"")), not self._over

    def stream(self, first: bytes) -> Stream:
        return Stream(self._rest(first), self.close)

    def finish(self) -> None:
        """The answer is complete; the app may still be running its background tasks."""
        assert self._app is not None
        self._settle(self._app)

    def _settle(self, app: asyncio.Future[Any]) -> None:
        """An app that answered in full: let it finish, and log it if it raises."""
        if app.done():
            self._report(app)
        else:
            self._keep(app)

    async def _rest(self, first: bytes) -> AsyncIterator[bytes]:
        yield first
        while not self._over:
            event = await self._next()
            yield bytes(event.get("body", b""))

    async def _next(self) -> Message:
        """The next body event; the app's error, or a RuntimeError, if it ends without one."""
        app = self._app
        assert app is not None
        if not self._parts and not app.done():
            self._ready = asyncio.get_running_loop().create_future()
            await self._ready
        if not self._parts:
            app.result()  # raises the app's error
            what = "an answer" if self._start is None else "the rest of its answer"
            raise RuntimeError(f"the ASGI app returned without sending {what}")
        part = self._parts.popleft()
        self._held -= len(part.get("body", b""))
        self._over = not part.get("more_body", False)
        if self._taken is not None and self._held <= self.AHEAD:
            self._taken.set_result(None)
            self._taken = None
        return part

    def _wake(self, _: object = None) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_result(None)

    async def close(self) -> None:
        """The client is gone or the answer is over: the app hears ``http.disconnect``."""
        if self._gone is None:
            self._gone = asyncio.get_running_loop().create_future()
        if not self._gone.done():
            self._gone.set_result(None)
        app = self._app
        if app is None:
            return
        if self._over:
            self._settle(app)  # answered in full: let it finish
            return
        if app.done():
            return
        app.cancel()
        await asyncio.wait({app})  # its cancellation, or an error on the way out, is its own


class Lifespan:
    """The app's lifespan protocol, run as a task for the plug-in's life.

    An app that takes the lifespan scope for a request does not support lifespan, as uvicorn
    decides it: an HTTP event it sends there is refused (``send`` raises, so it stops); and
    one that asks for the next event before it replied to this one (a loop waiting for its
    request's body) is stopped there, where uvicorn would wait for it forever.
    """

    def __init__(self, app: App, state: dict[str, Any], name: str = "") -> None:
        self.app = app
        self.state = state
        self.name = name
        self._events: asyncio.Queue[Message] = asyncio.Queue()
        self._replies: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[Any] | None = None
        self._owed: str | None = None  # the event the app took and has not replied to yet

    async def startup(self) -> Message | None:
        """Run start-up: the app's reply, or None when it does not support lifespan."""
        scope = {"type": "lifespan", "asgi": ASGI, "state": self.state}
        self._task = asyncio.ensure_future(self.app(scope, self._receive, self._send))
        await self._events.put({"type": "lifespan.startup"})
        return await self._reply()

    async def shutdown(self, name: str, timeout: float) -> None:
        """Run shut-down, within ``timeout`` seconds: past it the app is cut off (its lifespan
        task cancelled) and logged, as a server's graceful timeout cuts off its workers."""
        await self._events.put({"type": "lifespan.shutdown"})
        try:
            reply = await asyncio.wait_for(self._reply(), timeout)
        except TimeoutError:
            log.error(
                "plug-in %r: the app's lifespan shut-down did not finish within %g s; cut off",
                name,
                timeout,
            )
            assert self._task is not None
            self._task.cancel()
            return
        if reply is not None and reply["type"] == "lifespan.shutdown.failed":
            log.error("an ASGI app's lifespan shut-down failed: %s", reply.get("message", ""))

    async def _receive(self) -> Message:
        if self._owed:
            log.info(
                "plug-in %r: the app asked for another event before it replied to %s; it "
                "does not support lifespan: requests only",
                self.name,
                self._owed,
            )
            raise asyncio.CancelledError  # it ends here, as if cancelled while it waits
        event = await self._events.get()
        self._owed = event["type"]
        return event

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        if not isinstance(kind, str) or not kind.startswith("lifespan."):
            raise RuntimeError(
                f"the lifespan scope takes lifespan events only; the app sent {kind!r} "
                "(is it answering the lifespan scope as a request?)"
            )
        self._owed = None
        await self._replies.put(message)

    async def _reply(self) -> Message | None:
        """The app's next lifespan message, or None when it returned or raised instead (an app
        without lifespan support raises on the unknown scope type, as uvicorn expects)."""
        assert self._task is not None
        reply = asyncio.ensure_future(self._replies.get())
        await asyncio.wait({reply, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if reply.done():
            return reply.result()
        reply.cancel()
        if not self._task.cancelled() and self._task.exception() is not None:
            log.debug("the ASGI app does not support lifespan: %r", self._task.exception())
        return None


def _header(headers: list[list[str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _split(url: str) -> tuple[str, str, str, str]:
    """``(scheme, host, path, query)`` of the absolute URL the runtime forwards."""
    scheme_end = url.find("://")
    if scheme_end < 0:
        scheme, host, rest = "http", "localhost", url
    else:
        path_start = url.find("/", scheme_end + 3)
        if path_start < 0:
            path_start = len(url)
        scheme, host, rest = url[:scheme_end], url[scheme_end + 3 : path_start], url[path_start:]
    path, _, query = rest.partition("?")
    return scheme, host, path or "/", query
