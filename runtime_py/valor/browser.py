"""The browser host: the Valor runtime inside the Pyodide worker (``web/valor-worker.js``).

The worker's JavaScript only moves messages; everything else happens here, in the same
``Runtime`` the server runs. ``BROWSER_LOADERS`` lists the plug-in kinds the browser supports.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
from collections.abc import Callable
from typing import Any

from .errors import PluginLoadError
from .event_loop import run_late_timers_at_once
from .kinds import Loader, browser_loaders
from .kinds.python import fresh
from .manifest import load_manifest
from .runtime import Runtime
from .status import reason
from .store.indexeddb import IndexedDBBackend, database_name
from .streaming import Stream
from .threadless import run_threads_inline
from .wire import RequestMessage, ResponseMessage

BROWSER_LOADERS: dict[str, Loader] = browser_loaders()
"""``{kind: loader}`` for the browser (``valor.kinds.KINDS`` says where each one is)."""

PULL_BYTES = 256 * 1024
"""Bytes a pull of a streamed answer carries at most from parts that are ready at once (the
first part, whatever its size, always goes alone or first)."""

LOAD_PAUSE = 0.004
"""Seconds between two plug-ins' starts at boot. Pyodide runs an awaited zero sleep as an
immediate callback, which the worker takes before the port's messages: a page's first request
then waited for every plug-in's start (20-90 ms after ready, measured). A timer turn lets it in."""

LOAD_QUIET = 0.05
"""Seconds without a request before the next plug-in's start, for the first ``LOAD_PATIENCE``
seconds. A js, wasm or WASI plug-in's start is a new Web Worker compiling its scripts, which
took the machine from the page's first requests: their round trip through the service worker
went from 6-12 ms to 55-130 ms on a first reload (measured on two cores). A request for a
plug-in not started yet starts it at once."""

LOAD_PATIENCE = 1.0
"""Seconds from boot during which starts wait for quiet: a page that never stops sending
requests still has every plug-in started within about this long."""

try:
    from pyodide.ffi import JsBuffer, to_js
except ImportError:  # CPython: the module imports for tools and tests; only Pyodide runs it
    JsBuffer = bytes

    def to_js(value: Any) -> Any:
        raise RuntimeError("valor.browser runs inside Pyodide only")


class WorkerHost:
    """What the worker calls: ``handle`` for each request, ``prefixes`` to intercept."""

    def __init__(
        self,
        runtime: Runtime,
        loading: asyncio.Task[list[PluginLoadError]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.runtime = runtime
        self.loading = loading
        self.loop = loop
        self._streams: dict[int, Stream] = {}  # streamed answers being read, by id
        self._last_stream = 0
        self._pulling: dict[int, asyncio.Future[Any]] = {}  # a part being made, by stream id
        self._ahead: dict[int, asyncio.Task[bytes | None]] = {}  # the next part, for a pull

    @property
    def prefixes(self) -> list[str]:
        return self.runtime.intercept_prefixes

    def describe(self) -> dict[str, Any]:
        """The state the page shows: mounted plug-ins, load failures, prefixes, and whether
        plug-ins are still loading."""
        failures: list[Any] = []
        if self.loading.done():
            failed = None if self.loading.cancelled() else self.loading.exception()
            failures = [failed] if failed is not None else self.loading.result()
        return {
            "plugins": [spec.describe() for spec in self.runtime.plugins],
            "failures": [str(failure) for failure in failures],
            "prefixes": self.prefixes,
            "loading": not self.loading.done(),
        }

    async def loaded(self) -> dict[str, Any]:
        """``describe()`` once every plug-in has loaded or failed to (a promise in JS)."""
        await asyncio.wait({self.loading})
        return self.describe()

    def handle(self, url: str, method: str, headers: str, body: Any) -> Any:
        """Answer one request from the worker: ``headers`` as ``name: value`` lines joined by
        CRLF (one string crosses into Python faster than a list of pairs; fetch forbids CR and
        LF in headers), ``body`` an ``ArrayBuffer`` or undefined. Returns ``[status, reason,
        headers, body]`` (a JS array; the body a fresh ``Uint8Array`` the worker transfers), or
        ``[status, reason, headers, None, stream_id]`` for a streamed answer (see ``pull``).

        The runtime starts eagerly: when it finishes without waiting, as most plug-ins do, the
        answer is returned at once, which saves the worker a promise and an event-loop turn per
        request. Otherwise a future (a promise in JS) is returned.
        """
        message: RequestMessage = {
            "url": url,
            "method": method,
            "headers": [line.split(": ", 1) for line in headers.split("\r\n")] if headers else [],
            "body": body.to_bytes() if isinstance(body, JsBuffer) else None,
        }
        task = asyncio.Task(self.runtime.handle(message), loop=self.loop, eager_start=True)
        if task.done():
            return self._to_js(task.result())
        return asyncio.ensure_future(_answer_later(task, self._to_js))

    def pull(self, stream_id: int) -> Any:
        """The next parts of a streamed answer, as one fresh ``Uint8Array`` (a promise of it):
        the next part, and every part ready after it, up to ``PULL_BYTES``; ``None`` once the
        stream is over. A stream that fails rejects, with its error (after the parts before
        the failure)."""
        pulling = asyncio.ensure_future(self._pull(stream_id))
        self._pulling[stream_id] = pulling
        return pulling

    def cancel(self, stream_id: int) -> Any:
        """The page no longer reads the stream: close it, and the plug-in's generator."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return None
        ahead = self._ahead.pop(stream_id, None)
        return asyncio.ensure_future(_close(stream, self._pulling.pop(stream_id, None), ahead))

    async def _pull(self, stream_id: int) -> Any:
        stream = self._streams.get(stream_id)
        if stream is None:
            return None
        try:
            ahead = self._ahead.pop(stream_id, None)
            part = await (ahead if ahead is not None else _next_part(stream))
            if part is None:
                self._streams.pop(stream_id, None)
                await stream.aclose()
                return None
            parts = [part]
            size = len(part)
            # Parts ready now go with it: a generator of many small parts would otherwise cost
            # a round trip through the service worker each. The first that is not ready (or
            # the end, or an error) waits for the next pull.
            while size < PULL_BYTES:
                following = asyncio.Task(_next_part(stream), loop=self.loop, eager_start=True)
                if not following.done() or following.exception() is not None:
                    self._ahead[stream_id] = following
                    break
                part = following.result()
                if part is None:
                    self._ahead[stream_id] = following
                    break
                parts.append(part)
                size += len(part)
        except BaseException:
            self._streams.pop(stream_id, None)
            await stream.aclose()
            raise
        finally:
            self._pulling.pop(stream_id, None)
        return to_js(parts[0] if len(parts) == 1 else b"".join(parts))

    def _to_js(self, response: ResponseMessage) -> Any:
        body = response["body"]
        if type(body) is bytes:
            return to_js_response(response)
        # A Stream: the worker pulls its parts one by one, as the page reads them.
        self._last_stream += 1
        self._streams[self._last_stream] = body
        return to_js_response({**response, "body": None}, self._last_stream)

    def report_errors(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(json)`` with each error the runtime logs under an error id (a
        plug-in that failed, before or after its answer): ``{"message", "error_id",
        "traceback"}``, for the page's ``Valor.detail.errors``."""
        logger = logging.getLogger("valor")
        for handler in [h for h in logger.handlers if isinstance(h, _ErrorReporter)]:
            logger.removeHandler(handler)  # a runtime started before in this interpreter's
        logger.addHandler(_ErrorReporter(callback))

    async def close(self) -> None:
        """Close the runtime: its plug-ins (each one's ``on_destroy``), streams and store."""
        for stream_id in list(self._streams):
            closing = self.cancel(stream_id)  # nobody will pull the rest
            if closing is not None:
                await closing
        await self.runtime.close()
        fresh.forget_all()  # a runtime started after this one imports its plug-ins afresh


class _ErrorReporter(logging.Handler):
    """Hands the runtime's errors logged under an error id to the page."""

    def __init__(self, callback: Callable[[str], None]) -> None:
        super().__init__(logging.ERROR)
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        found = _ERROR_ID.search(message)
        if found is None:
            return
        trace = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else ""
        error = {"message": message, "error_id": found.group(1), "traceback": trace}
        try:
            self.callback(json.dumps(error))
        except Exception:  # the page's side failing must not fail the runtime's logging
            self.handleError(record)


_ERROR_ID = re.compile(r"\[error_id=([0-9a-f]+)\]")


async def start(
    manifest_path: str,
    root_path: str = "",
    on_change: Callable[[Any], None] | None = None,
    registry: bool = True,
    access_log: bool = False,
) -> WorkerHost:
    """Start a runtime on the manifest. It answers at once; its plug-ins load side by side,
    and a request to one still loading waits for it (``WorkerHost.loaded`` says when all
    have). ``on_change(prefixes)`` runs after mounts change.

    The registry needs no token here: it only ever holds files shipped in the bundle. Its
    changes are kept in the site's store, and every tab of the site follows them
    (``valor.registry``).
    """
    # Load and failure messages go to the console; one line per request would slow every call.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("valor.access").setLevel(logging.DEBUG if access_log else logging.WARNING)
    run_late_timers_at_once(type(asyncio.get_running_loop()))
    run_threads_inline()  # the requirements are in site-packages: FastAPI's sync endpoints
    root_path = root_path.rstrip("/")
    # The plug-ins' stores: the site's IndexedDB database, shared by every tab of the site.
    store = IndexedDBBackend(database_name(root_path + "/"))
    runtime = Runtime(BROWSER_LOADERS, root_path=root_path, registry=registry, store=store)
    loading = runtime.start_loading(
        load_manifest(manifest_path), pause=LOAD_PAUSE, quiet=LOAD_QUIET, patience=LOAD_PATIENCE
    )
    host = WorkerHost(runtime, loading, asyncio.get_running_loop())
    if on_change is not None:
        runtime.subscribe(lambda: on_change(to_js(host.prefixes)))
    return host


# Which host answered: the one header in which the two hosts' answers differ, by design.
HOST_HEADER = ["x-valor-host", "browser"]


def to_js_response(response: ResponseMessage, stream_id: int | None = None) -> Any:
    """``[status, reason, headers, body]``, and a streamed answer's id (its body ``None``)."""
    status = response["status"]
    headers = [*response["headers"], HOST_HEADER]
    answer = [status, reason(status), headers, response["body"]]
    return to_js(answer if stream_id is None else [*answer, stream_id])


async def _close(
    stream: Stream, pulling: asyncio.Future[Any] | None, ahead: asyncio.Future[Any] | None
) -> None:
    for making in (pulling, ahead):
        if making is not None and not making.done():
            making.cancel()  # a generator cannot be closed while it makes a part
            await asyncio.wait({making})
        elif making is not None and not making.cancelled():
            making.exception()  # retrieved: the page is gone, nobody reads it
    await stream.aclose()


async def _next_part(stream: Stream) -> bytes | None:
    """The stream's next part, or None at its end."""
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        return None


async def _answer_later(
    task: asyncio.Task[ResponseMessage], convert: Callable[[ResponseMessage], Any]
) -> Any:
    return convert(await task)
