"""The browser host's loaders for the js, wasm, wasi, proxy and native kinds (Pyodide only).

Logic stays in Python and is shared with the server: the ABI (``abi``), CGI (``cgi``), limits
(``wasm_limits``) and proxy rules (``proxy_rules``). What runs in JavaScript is transport:
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
from pathlib import Path
from typing import Any

from ..errors import PluginCrashed, PluginLoadError
from ..manifest import PluginSpec
from ..wire import RequestMessage, ResponseMessage
from . import Loader
from .abi import AbiError, decode_response, encode_request
from .cgi import CgiError, cgi_environ, parse_cgi_output
from .failures import PluginFailed
from .proxy_rules import (
    DEFAULT_RESPONSE_BYTES,
    UnsafePath,
    forward_headers,
    relay_headers,
    upstream_url,
)
from .wasm_limits import wasm_limits

log = logging.getLogger("valor.plugins")
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


def read_file(spec: PluginSpec) -> bytes:
    try:
        return Path(spec.path or "").read_bytes()
    except OSError as exc:
        raise PluginLoadError(
            spec.name, f"cannot read {str(spec.path)!r}: {exc.strerror}"
        ) from None


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
            if field(answer, "crashed"):
                raise PluginCrashed(str(error))
            return PluginFailed(500, f"plug-in {self.spec.name!r} failed: {error}").answer()
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
    workers = spec.config.get("workers", 2)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise PluginLoadError(spec.name, f"config 'workers' must be 1 to 64, got {workers!r}")
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
    a call is cancelled (the runtime's timeout) or the worker dies."""

    def __init__(self, spec: PluginSpec, mode: str, module: bytes, max_memory: int) -> None:
        self.spec = spec
        self.mode = mode
        self.module = module
        self.max_memory = max_memory
        self._worker: Any = None
        self._ready: asyncio.Future[None] | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
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
        worker.postMessage(js_object({**load, "maxMemory": self.max_memory}))
        await self._ready

    def _receive(self, data: Any) -> None:
        kind = field(data, "type")
        if kind == "loaded" and self._ready and not self._ready.done():
            self._ready.set_result(None)
        elif kind == "error" and self._ready and not self._ready.done():
            self._ready.set_exception(PluginLoadError(self.spec.name, str(data.error)))
        else:
            future = self._pending.pop(int(data.id), None)
            if future is not None and not future.done():
                future.set_result(data)

    def _fail(self, message: str) -> None:
        if self._ready is not None and not self._ready.done():
            # The worker died while loading (its script is missing, for one).
            self._ready.set_exception(PluginLoadError(self.spec.name, message))
        self.terminate()
        error = PluginCrashed(f"its executor worker failed: {message}")
        for future in self._pending.values():
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
        self._pending[call_id] = future
        self._worker.postMessage(js_object({"type": "call", "id": call_id, **fields}))
        try:
            return await future
        except asyncio.CancelledError:
            # Nothing interrupts wasm in a browser but terminating its worker.
            self._fail("terminated after a timeout")
            raise

    def terminate(self) -> None:
        if self._worker is not None:
            self._worker.terminate()
        for proxy in self._proxies:
            proxy.destroy()
        self._worker, self._ready, self._proxies = None, None, []


class BrowserWasmPlugin:
    def __init__(self, spec: PluginSpec, executor: Executor) -> None:
        self.spec = spec
        self.executor = executor

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        answer = await self.executor.call({"buffer": js_bytes(encode_request(message))})
        if field(answer, "error") is not None:
            return _trap_or_error(self.spec, answer)
        try:
            return decode_response(answer.buffer.to_bytes())
        except AbiError as exc:
            return PluginFailed(500, f"plug-in {self.spec.name!r} answered badly: {exc}").answer()

    async def close(self) -> None:
        self.executor.terminate()


class BrowserWasiPlugin:
    def __init__(self, spec: PluginSpec, executor: Executor) -> None:
        self.spec = spec
        self.executor = executor

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        body = message.get("body")
        answer = await self.executor.call(
            {
                "argv": [self.spec.name],
                "env": cgi_environ(message),
                "stdin": js_bytes(body) if body else None,
            }
        )
        if field(answer, "error") is not None:
            return _trap_or_error(self.spec, answer)
        if field(answer, "stderr"):
            text = str(answer.stderr).rstrip()
            logging.getLogger("valor.plugins").warning(
                "plug-in %s stderr: %s", self.spec.name, text
            )
        if answer.code != 0:
            return PluginFailed(
                500, f"plug-in {self.spec.name!r} exited with code {answer.code}"
            ).answer()
        try:
            return parse_cgi_output(answer.stdout.to_bytes())
        except CgiError as exc:
            return PluginFailed(500, f"plug-in {self.spec.name!r} answered badly: {exc}").answer()

    async def close(self) -> None:
        self.executor.terminate()


def _trap_or_error(spec: PluginSpec, answer: Any) -> ResponseMessage:
    what = "trapped" if field(answer, "trap") else "failed"
    return PluginFailed(500, f"plug-in {spec.name!r} {what}: {field(answer, 'error')}").answer()


async def _executor(spec: PluginSpec, mode: str) -> Executor:
    limits = wasm_limits(spec)
    executor = Executor(spec, mode, read_file(spec), limits.max_memory)
    try:
        await executor.start()
    except PluginLoadError as exc:
        executor.terminate()
        first = exc.reason.strip().splitlines()[0] if exc.reason.strip() else "invalid module"
        raise PluginLoadError(
            spec.name, f"{Path(spec.path or '').name!r} is not a valid WebAssembly module: {first}"
        ) from None
    return executor


async def load_wasm(spec: PluginSpec) -> BrowserWasmPlugin:
    return BrowserWasmPlugin(spec, await _executor(spec, "wasm"))


async def load_wasi(spec: PluginSpec) -> BrowserWasiPlugin:
    return BrowserWasiPlugin(spec, await _executor(spec, "wasi"))


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

        try:
            target = upstream_url(self.base, message["url"])
        except UnsafePath as exc:
            return PluginFailed(400, f"plug-in {self.spec.name!r}: {exc}").answer()
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
            response = await fetch(target, js_object(init))
            data = (await response.arrayBuffer()).to_bytes()
        except asyncio.CancelledError:
            controller.abort()
            raise
        except Exception as exc:  # a JsException: the network failed
            detail = f"plug-in {self.spec.name!r}: upstream {self.base} is unreachable: "
            return PluginFailed(502, detail + _js_message(exc)).answer()
        limit = self.spec.limits.get("response_bytes", DEFAULT_RESPONSE_BYTES)
        if len(data) > limit:
            detail = f"upstream {self.base} answered a body larger than the limit of {limit} bytes"
            return PluginFailed(502, f"plug-in {self.spec.name!r}: {detail}").answer()
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
