"""The browser host's loaders for the js, wasm, wasi, proxy and native kinds (Pyodide only).

Logic stays in Python and is shared with the server: the wasm kind (``wasm``: checks, the ABI's
steps, the memory cap), CGI (``cgi``), limits (``wasm_limits``) and proxy rules
(``proxy_rules``). What runs in JavaScript is transport:
``kinds/pool.mjs`` and ``kinds/boot.mjs`` (the same worker pool Deno runs on the server) and
``kinds/wasm-executor.mjs`` (a worker per wasm/WASI plug-in that can be terminated on timeout,
since nothing else stops an endless loop in the browser). URLs resolve against the runtime
worker's own, i.e. the bundle's base; plug-in files are at ``/valor/<path>`` in Pyodide's file
system and at ``<base><path>`` on the site.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import PluginCrashed, PluginLoadError
from ..manifest import PluginSpec
from ..wire import RequestMessage, ResponseMessage
from . import Loader
from .failures import PluginFailed, reported_failure
from .js import js_workers
from .proxy_rules import forward_headers, relay_headers, upstream_url
from .wasi import WasiPlugin, check_command
from .wasi import load as load_wasi_with
from .wasm import (
    Step,
    Steps,
    WasmPlugin,
    check_module,
    invalid_module,
    load,
    run_steps_async,
    start_steps,
)
from .wasm_limits import WasmLimits

log = logging.getLogger("valor.plugins")
T = TypeVar("T")
BUNDLE_ROOT = "/valor/"
# The body a browser's fetch hands over is already decoded and re-framed.
BROWSER_DROPPED = {"content-encoding", "content-length"}


def site_url(relative: str) -> str:
    """A URL in the bundle, resolved against the runtime worker's own URL."""
    from js import URL, location

    return URL.new(relative, location.href).href


def plugin_url(spec: PluginSpec) -> str:
    path = str(spec.path or "")
    if not path.startswith(BUNDLE_ROOT):
        raise PluginLoadError(spec.name, f"{path!r} is not a file in the bundle")
    return site_url(path[len(BUNDLE_ROOT) :])


def js_bytes(data: bytes) -> Any:
    from js import Uint8Array

    array = Uint8Array.new(len(data))
    if data:
        array.assign(data)
    return array


def js_object(value: dict[str, Any]) -> Any:
    from js import Object
    from pyodide.ffi import to_js

    return to_js(value, dict_converter=Object.fromEntries)


def field(value: Any, name: str) -> Any:
    """A JS object's property, ``None`` when it is missing, undefined or null."""
    found = getattr(value, name, None)
    return None if found is None or type(found).__name__ == "JsNull" else found


# -- js ---------------------------------------------------------------------------------------


class BrowserJsPlugin:
    """The plug-in's script in a pool of real dedicated workers, started from this worker."""

    def __init__(self, spec: PluginSpec, pool: Any) -> None:
        self.spec = spec
        self._pool = pool
        self._ids = itertools.count(1)

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        request_id = next(self._ids)
        body = message.get("body")
        request = js_object(
            {
                "url": message["url"],
                "method": message["method"],
                "headers": message["headers"],
                "body": js_bytes(body) if body else None,
            }
        )
        try:
            answer = await self._pool.answer(request_id, request)
        except asyncio.CancelledError:
            self._pool.cancel(request_id)  # terminates the worker stuck on it
            raise
        error = field(answer, "error")
        if error is not None:
            raise reported_failure(self.spec.name, error, bool(field(answer, "crashed")))
        return {
            "status": int(answer.status),
            "headers": answer.headers.to_py(),
            "body": answer.body.to_bytes(),
        }

    async def close(self) -> None:
        self._pool.close()


async def load_js(spec: PluginSpec) -> BrowserJsPlugin:
    from pyodide.code import run_js

    script = plugin_url(spec)
    workers = js_workers(spec)
    pool_module = await run_js(f"import({json.dumps(site_url('kinds/pool.mjs'))})")
    make_worker = run_js(
        "(boot, script) => () => new Worker(boot, {type: 'module', name: script})"
    )(site_url("kinds/boot.mjs"), script)
    pool = pool_module.WorkerPool.new(make_worker, workers)
    try:
        await pool.start()
    except Exception as exc:  # a JsException: the script did not load
        pool.close()
        raise PluginLoadError(spec.name, _js_message(exc)) from None
    return BrowserJsPlugin(spec, pool)


# -- wasm and wasi ----------------------------------------------------------------------------


class Executor:
    """A ``kinds/wasm-executor.mjs`` worker running one module; terminated and restarted when
    the call it is running is cancelled (the runtime's timeout) or the worker dies.

    The worker runs calls one at a time in the order they were sent, so the oldest pending
    call is the one running: cancelling it restarts the worker and sends the calls queued
    behind it again; cancelling another one only forgets it."""

    def __init__(self, spec: PluginSpec, mode: str, module: bytes) -> None:
        self.spec = spec
        self.mode = mode
        self.module = module
        self.imports: list[str] = []
        self.exports: dict[str, str] = {}
        self._worker: Any = None
        self._ready: asyncio.Future[None] | None = None
        self._pending: dict[int, tuple[asyncio.Future[Any], dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._proxies: list[Any] = []

    async def start(self) -> None:
        if self._ready is not None:
            return await self._ready
        from js import Worker
        from pyodide.ffi import create_proxy

        self._ready = asyncio.get_running_loop().create_future()
        self._ready.add_done_callback(lambda f: f.exception())  # retrieved by call() or start()
        worker = Worker.new(site_url("kinds/wasm-executor.mjs"), js_object({"type": "module"}))
        on_message = create_proxy(lambda event: self._receive(event.data))
        on_error = create_proxy(lambda event: self._fail(str(getattr(event, "message", event))))
        self._proxies = [on_message, on_error]
        worker.onmessage = on_message
        worker.onerror = on_error
        self._worker = worker
        load = {"type": "load", "mode": self.mode, "bytes": js_bytes(self.module)}
        worker.postMessage(js_object(load))
        await self._ready

    def _receive(self, data: Any) -> None:
        kind = field(data, "type")
        if kind == "loaded" and self._ready and not self._ready.done():
            self.imports = data.imports.to_py()
            self.exports = data.exports.to_py()
            self._ready.set_result(None)
        elif kind == "error" and self._ready and not self._ready.done():
            self._ready.set_exception(PluginLoadError(self.spec.name, str(data.error)))
        else:
            future, _ = self._pending.pop(int(data.id), (None, None))
            if future is not None and not future.done():
                future.set_result(data)

    def _fail(self, message: str) -> None:
        if self._ready is not None and not self._ready.done():
            # The worker died while loading (its script is missing, for one).
            self._ready.set_exception(PluginLoadError(self.spec.name, message))
        self.terminate()
        self._fail_pending(PluginCrashed(f"its executor worker failed: {message}"))

    def _fail_pending(self, error: Exception) -> None:
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def call(self, fields: dict[str, Any]) -> Any:
        try:
            await self.start()
        except PluginLoadError as exc:
            self.terminate()
            raise PluginCrashed(f"it could not restart: {exc.reason}") from None
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._send(call_id, future, fields)
        try:
            return await future
        except asyncio.CancelledError:
            self._cancel(call_id)
            raise

    def _send(self, call_id: int, future: asyncio.Future[Any], fields: dict[str, Any]) -> None:
        self._pending[call_id] = (future, fields)
        self._worker.postMessage(js_object({"type": "call", "id": call_id, **fields}))

    def _cancel(self, call_id: int) -> None:
        running = next(iter(self._pending), None)
        self._pending.pop(call_id, None)
        if call_id != running:
            return  # not started yet: its answer, when it comes, is dropped
        # Nothing interrupts wasm in a browser but terminating its worker.
        queued = list(self._pending.items())
        self._pending.clear()
        self.terminate()
        if queued:
            task = asyncio.ensure_future(self._send_again(queued))
            task.add_done_callback(lambda t: t.exception())

    async def _send_again(
        self, queued: list[tuple[int, tuple[asyncio.Future[Any], dict[str, Any]]]]
    ) -> None:
        """The calls that were waiting behind a cancelled one, sent to a fresh worker."""
        try:
            await self.start()
        except PluginLoadError as exc:
            self.terminate()
            self._pending = dict(queued)
            self._fail_pending(PluginCrashed(f"it could not restart: {exc.reason}"))
            return
        for call_id, (future, fields) in queued:
            if not future.done():
                self._send(call_id, future, fields)

    def terminate(self) -> None:
        if self._worker is not None:
            self._worker.terminate()
        for proxy in self._proxies:
            proxy.destroy()
        self._worker, self._ready, self._proxies = None, None, []


class BrowserWasmEngine:
    """The browser's engine for the wasm kind (``valor.loaders.wasm`` holds the rest): one
    instance in an executor worker, which runs the ABI's steps one message each. One request at
    a time: the steps of two requests must not interleave on one instance."""

    def __init__(self, spec: PluginSpec, limits: WasmLimits, executor: Executor) -> None:
        self.spec = spec
        self.limits = limits
        self.executor = executor
        self._lock = asyncio.Lock()
        self._started = False

    @classmethod
    async def create(cls, spec: PluginSpec, limits: WasmLimits, data: bytes) -> BrowserWasmEngine:
        executor = await _executor(spec, "wasm", data)
        self = cls(spec, limits, executor)
        try:
            check_module(spec, executor.imports, executor.exports)
            await self.run(_no_steps)
        except (PluginFailed, PluginCrashed) as exc:
            executor.terminate()
            raise PluginLoadError(spec.name, f"instantiating the module failed: {exc}") from None
        except PluginLoadError:
            executor.terminate()
            raise
        return self

    async def run(self, steps: Callable[[], Steps[T]]) -> T:
        async with self._lock:
            try:
                if not self._started:
                    await self._do(("start",))
                    exports = self.executor.exports
                    await run_steps_async(start_steps(self.spec, self.limits, exports), self._do)
                    self._started = True
                return await run_steps_async(steps(), self._do)
            except BaseException:
                self._started = False  # a trap, a failure or a timeout: a fresh instance next
                raise

    async def _do(self, step: Step) -> Any:
        op, *args = step
        if op == "write":
            args = [args[0], js_bytes(args[1])]
        answer = await self.executor.call({"op": op, "args": args})
        if field(answer, "error") is not None:
            raise _trap_or_error(self.spec, answer)
        value = field(answer, "value")
        if op == "read":
            return value.to_bytes()
        return int(value) if isinstance(value, str) else value  # an i64 comes as text

    async def close(self) -> None:
        self.executor.terminate()


def _no_steps() -> Steps[None]:
    return
    yield


class BrowserWasiEngine:
    """The browser's engine for the WASI kind (``valor.loaders.wasi`` holds the rest): Valor's
    WASI shim in an executor worker, a fresh instance per run."""

    def __init__(self, spec: PluginSpec, executor: Executor) -> None:
        self.spec = spec
        self.executor = executor

    @classmethod
    async def create(cls, spec: PluginSpec, limits: WasmLimits, data: bytes) -> BrowserWasiEngine:
        executor = await _executor(spec, "wasi", data)
        try:
            check_command(spec, executor.exports)
        except PluginLoadError:
            executor.terminate()
            raise
        return cls(spec, executor)

    async def run(
        self, argv: list[str], env: dict[str, str], stdin: bytes
    ) -> tuple[bytes, str, int]:
        fields = {"argv": argv, "env": env, "stdin": js_bytes(stdin) if stdin else None}
        answer = await self.executor.call(fields)
        if field(answer, "error") is not None:
            raise _trap_or_error(self.spec, answer)
        return answer.stdout.to_bytes(), str(field(answer, "stderr") or ""), int(answer.code)

    async def close(self) -> None:
        self.executor.terminate()


def _trap_or_error(spec: PluginSpec, answer: Any) -> PluginFailed:
    what = "trapped" if field(answer, "trap") else "failed"
    return PluginFailed(500, f"plug-in {spec.name!r} {what}: {field(answer, 'error')}")


async def _executor(spec: PluginSpec, mode: str, module: bytes) -> Executor:
    executor = Executor(spec, mode, module)
    try:
        await executor.start()
    except PluginLoadError as exc:
        executor.terminate()
        raise invalid_module(spec, exc.reason) from None
    return executor


async def load_wasm(spec: PluginSpec) -> WasmPlugin:
    return await load(spec, BrowserWasmEngine.create)


async def load_wasi(spec: PluginSpec) -> WasiPlugin:
    return await load_wasi_with(spec, BrowserWasiEngine.create)


# -- proxy ------------------------------------------------------------------------------------


class BrowserProxyPlugin:
    """``fetch`` from the runtime worker. The service worker lets it through to the network
    (it only intercepts mounted prefixes of its own origin); a cross-origin upstream must
    allow this site with CORS, as for any page."""

    def __init__(self, spec: PluginSpec) -> None:
        self.spec = spec
        self.base = spec.url or ""

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        from js import AbortController, Array, fetch

        controller = AbortController.new()
        body = message.get("body")
        init = {
            "method": message["method"],
            "headers": [list(pair) for pair in forward_headers(message["headers"], message["url"])],
            "signal": controller.signal,
        }
        if body and message["method"] not in ("GET", "HEAD"):
            init["body"] = js_bytes(body)
        try:
            response = await fetch(upstream_url(self.base, message["url"]), js_object(init))
            data = (await response.arrayBuffer()).to_bytes()
        except asyncio.CancelledError:
            controller.abort()
            raise
        except Exception as exc:  # a JsException: the network failed
            detail = f"plug-in {self.spec.name!r}: upstream {self.base} is unreachable: "
            raise PluginFailed(502, detail + _js_message(exc)) from None
        headers = [(str(n), str(v)) for n, v in Array.from_(response.headers).to_py()]
        kept = [[n, v] for n, v in relay_headers(headers) if n.lower() not in BROWSER_DROPPED]
        return {"status": int(response.status), "headers": kept, "body": data}

    async def close(self) -> None:
        pass


async def load_proxy(spec: PluginSpec) -> BrowserProxyPlugin:
    return BrowserProxyPlugin(spec)


# -- native -----------------------------------------------------------------------------------


async def load_native(spec: PluginSpec) -> Any:
    raise PluginLoadError(
        spec.name,
        "native plug-ins are shared libraries, which a browser cannot load; "
        "serve this one with the server host (valor serve)",
    )


def _js_message(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


BROWSER_KIND_LOADERS: dict[str, Loader] = {
    "js": load_js,
    "wasm": load_wasm,
    "wasi": load_wasi,
    "proxy": load_proxy,
    "native": load_native,
}
