"""The browser's engine for the wasm kind (Pyodide only), and the executor it shares with the
WASI kind's: a ``kinds/wasm-executor.mjs`` worker per plug-in, which can be terminated on
timeout, since nothing else stops an endless loop in a browser. The kind itself (checks, the
ABI's steps, the memory cap, failures) is ``valor.kinds.wasm.core``, shared with the server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

from ...errors import PluginCrashed, PluginLoadError
from ...failures import PluginFailed
from ...manifest import PluginSpec
from ..shared.browser_ffi import field, js_bytes, js_object, require_workers, site_url
from .core import (
    Step,
    Steps,
    WasmPlugin,
    check_module,
    invalid_module,
    load,
    run_steps_async,
    start_steps,
)
from .limits import WasmLimits

T = TypeVar("T")


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
        require_workers(self.spec)
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

    def post(self, fields: dict[str, Any]) -> None:
        """Send a call whose answer nobody awaits (the worker must be running): a failure in it
        shows in the next call's answer, which the worker runs after it."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._send(next(self._ids), future, fields)

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
    """The browser's engine for the wasm kind (``valor.kinds.wasm.core`` holds the rest): one
    instance in an executor worker, which runs the ABI's steps one message each. One request at
    a time: the steps of two requests must not interleave on one instance."""

    def __init__(self, spec: PluginSpec, limits: WasmLimits, executor: Executor) -> None:
        self.spec = spec
        self.limits = limits
        self.executor = executor
        self._lock = asyncio.Lock()
        self._started = False
        self._size = 0  # the memory's size in bytes, as of the last answer

    @classmethod
    async def create(cls, spec: PluginSpec, limits: WasmLimits, data: bytes) -> BrowserWasmEngine:
        executor = await start_executor(spec, "wasm", data)
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
        # A round trip to the worker costs more than the step itself, so two steps take none:
        # "write" is sent without waiting (the next step's answer comes after it, and fails if
        # it failed), and "size" is in every answer.
        op, *args = step
        if op == "write":
            self.executor.post({"op": op, "args": [args[0], js_bytes(args[1])]})
            return None
        if op == "size":
            return self._size
        answer = await self.executor.call({"op": op, "args": args})
        if field(answer, "error") is not None:
            raise trap_or_error(self.spec, answer)
        self._size = field(answer, "size") or 0
        value = field(answer, "value")
        if op == "read":
            return value.to_bytes()
        return int(value) if isinstance(value, str) else value  # an i64 comes as text

    async def close(self) -> None:
        self.executor.terminate()


def _no_steps() -> Steps[None]:
    return
    yield


def trap_or_error(spec: PluginSpec, answer: Any) -> PluginFailed:
    what = "trapped" if field(answer, "trap") else "failed"
    return PluginFailed(500, f"plug-in {spec.name!r} {what}: {field(answer, 'error')}")


async def start_executor(spec: PluginSpec, mode: str, module: bytes) -> Executor:
    executor = Executor(spec, mode, module)
    try:
        await executor.start()
    except PluginLoadError as exc:
        executor.terminate()
        raise invalid_module(spec, exc.reason) from None
    return executor


async def load_wasm(spec: PluginSpec) -> WasmPlugin:
    return await load(spec, BrowserWasmEngine.create)
