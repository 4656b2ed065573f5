"""The server's engine for the wasm kind, on wasmtime: ``WasmtimeEngine`` (the kind itself is
``valor.kinds.wasm.core``), and the engines, limits and traps it shares with the WASI kind's
(``valor.kinds.wasi.server``).

Time limits use epoch interruption: one daemon thread ticks every engine, and each call gets
a deadline of the plug-in's timeout (plus a tick, so the runtime's own 504 normally wins and
this only frees the thread). The thread ticks only while wasm runs, so an idle server (or one
answering other kinds) never wakes it. CPython only.
"""

from __future__ import annotations

import asyncio
import atexit
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import wasmtime
import wasmtime._ffi as wasmtime_ffi

from ...concurrency import DEFAULT_THREADS, Threads
from ...errors import PluginLoadError
from ...failures import PluginFailed
from ...manifest import PluginSpec
from .core import (
    Step,
    Steps,
    WasmPlugin,
    check_module,
    invalid_module,
    load,
    read_module,
    run_steps,
    start_steps,
)
from .limits import WasmLimits

T = TypeVar("T")

TICK = 0.05
_busy = threading.Condition()
_running = 0  # wasm calls in progress, in every engine
_ticker_lock = threading.Lock()
_ticker: threading.Thread | None = None
_stopping = False  # the interpreter is exiting: the ticker ends
# Each live engine's native pointer, by the engine's id: the ticker ticks pointers, never the
# engines themselves. wasmtime frees an engine in its __del__, in a call that lets other
# threads run, before the engine's weak references are cleared: a ticker reading engines
# from a weak set could tick one being freed (a crash), or resurrect it. An engine's pointer
# leaves this dict, and is freed, under _ticking, which the ticker holds while it ticks.
_pointers: dict[int, Any] = {}
_ticking = threading.Lock()


class _TickedEngine(wasmtime.Engine):
    """An engine the ticker ticks until wasmtime frees it."""

    def __init__(self, config: wasmtime.Config) -> None:
        super().__init__(config)
        with _ticking:
            _pointers[id(self)] = self.ptr()

    def _delete(self, ptr: Any) -> None:
        with _ticking:
            _pointers.pop(id(self), None)
            super()._delete(ptr)


def _tick_forever() -> None:
    while True:
        with _busy:
            _busy.wait_for(lambda: _running > 0 or _stopping)
        if _stopping:
            return
        time.sleep(TICK)
        with _ticking:
            for pointer in _pointers.values():
                wasmtime_ffi.wasmtime_engine_increment_epoch(pointer)


@atexit.register
def _stop_ticker() -> None:
    # Before the interpreter finalizes: a daemon thread stopped there while holding _ticking
    # would hang the engines' __del__ for ever.
    global _stopping
    with _busy:
        _stopping = True
        _busy.notify_all()
    if _ticker is not None:
        _ticker.join(timeout=1)


def make_engine(limits: WasmLimits) -> wasmtime.Engine:
    """An engine with epoch interruption (and fuel when the plug-in has a fuel cap)."""
    global _ticker
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = limits.fuel is not None
    engine = _TickedEngine(config)
    with _ticker_lock:
        if _ticker is None:
            _ticker = threading.Thread(target=_tick_forever, name="valor-wasm-epoch", daemon=True)
            _ticker.start()
    return engine


def compile_module(
    spec: PluginSpec, engine: wasmtime.Engine, data: bytes | None = None
) -> wasmtime.Module:
    """Compile the plug-in's module (read from its path unless given); a missing or bad file is
    a clear load error."""
    if data is None:
        data = read_module(spec)
    try:
        return wasmtime.Module(engine, data)
    except wasmtime.WasmtimeError as exc:
        raise invalid_module(spec, str(exc)) from None


def new_store(engine: wasmtime.Engine, limits: WasmLimits) -> wasmtime.Store:
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=limits.max_memory)
    return store


@contextmanager
def armed(store: wasmtime.Store, limits: WasmLimits) -> Iterator[None]:
    """Run wasm in the block with a fresh deadline (and fuel) on the store."""
    global _running
    store.set_epoch_deadline(math.ceil(limits.timeout / TICK) + 1)
    if limits.fuel is not None:
        store.set_fuel(limits.fuel)
    with _busy:
        _running += 1
        _busy.notify()
    try:
        yield
    finally:
        with _busy:
            _running -= 1


def trap_failure(spec: PluginSpec, limits: WasmLimits, trap: wasmtime.Trap) -> PluginFailed:
    """What a trap answers: 504 past the time limit, otherwise a 500 naming the trap."""
    if trap.trap_code == wasmtime.TrapCode.INTERRUPT:
        return PluginFailed(
            504, f"plug-in {spec.name!r} did not answer within {limits.timeout:g} seconds"
        )
    if trap.trap_code == wasmtime.TrapCode.OUT_OF_FUEL:
        return PluginFailed(500, f"plug-in {spec.name!r} ran out of fuel ({limits.fuel} units)")
    message = str(trap.message).strip().splitlines()[0]
    return PluginFailed(500, f"plug-in {spec.name!r} trapped: {message}")


class _Instance:
    """One instance of a wasm plug-in, and the steps it can run."""

    def __init__(self, store: wasmtime.Store, instance: wasmtime.Instance) -> None:
        self.store = store
        self.exports = instance.exports(store)
        memory = self.exports["memory"]
        assert isinstance(memory, wasmtime.Memory)
        self.memory = memory

    def do(self, step: Step) -> Any:
        op, *args = step
        if op == "call":
            return self.exports[args[0]](self.store, *args[1:])
        if op == "write":
            self.memory.write(self.store, args[1], args[0])
            return None
        if op == "read":
            ptr, size = args
            return bytes(self.memory.read(self.store, ptr, ptr + size))
        if op == "size":
            return self.memory.data_len(self.store)
        raise ValueError(f"unknown step {op!r}")


class WasmtimeRunner:
    """What both wasmtime engines (the wasm kind's and the WASI kind's) hold: the plug-in, its
    limits, the engine its module is compiled for and the worker threads its calls run in."""

    def __init__(self, spec: PluginSpec, limits: WasmLimits, engine: wasmtime.Engine) -> None:
        self.spec = spec
        self.limits = limits
        self.engine = engine
        self.threads = Threads(spec.name, spec.limits.get("threads", DEFAULT_THREADS))

    @staticmethod
    async def compile(
        spec: PluginSpec, limits: WasmLimits, data: bytes
    ) -> tuple[wasmtime.Engine, wasmtime.Module]:
        """A new engine for ``limits``, and the module compiled for it in a worker thread."""
        engine = make_engine(limits)
        return engine, await asyncio.to_thread(compile_module, spec, engine, data)

    async def close(self) -> None:
        self.threads.close()


class WasmtimeEngine(WasmtimeRunner):
    """The server's engine for the wasm kind: a pool of instances of one module, each call in a
    worker thread (wasmtime releases the GIL while wasm runs). A failed instance is dropped,
    so the next request gets a fresh one."""

    def __init__(
        self, spec: PluginSpec, limits: WasmLimits, engine: wasmtime.Engine, module: wasmtime.Module
    ) -> None:
        super().__init__(spec, limits, engine)
        self._module = module
        self._exports = [e.name for e in module.exports]
        self._idle: list[_Instance] = []

    @classmethod
    async def create(cls, spec: PluginSpec, limits: WasmLimits, data: bytes) -> WasmtimeEngine:
        engine, module = await cls.compile(spec, limits, data)
        imports = [f"{i.module}.{i.name}" for i in module.imports]
        check_module(spec, imports, {e.name: _kind(e.type) for e in module.exports})
        self = cls(spec, limits, engine, module)
        try:
            self._idle.append(await asyncio.to_thread(self._instantiate))
        except (wasmtime.WasmtimeError, wasmtime.Trap, PluginFailed) as exc:
            raise PluginLoadError(spec.name, f"instantiating the module failed: {exc}") from None
        return self

    def _instantiate(self) -> _Instance:
        store = new_store(self.engine, self.limits)
        with armed(store, self.limits):
            slot = _Instance(store, wasmtime.Instance(store, self._module, []))
            run_steps(start_steps(self.spec, self.limits, self._exports), slot.do)
        return slot

    async def run(self, steps: Callable[[], Steps[T]]) -> T:
        return await self.threads.run(self._run, steps)

    def _run(self, steps: Callable[[], Steps[T]]) -> T:
        try:
            slot = self._idle.pop() if self._idle else self._instantiate()
            with armed(slot.store, self.limits):
                result = run_steps(steps(), slot.do)
        except wasmtime.Trap as trap:
            raise trap_failure(self.spec, self.limits, trap) from None
        self._idle.append(slot)
        return result

    async def close(self) -> None:
        self._idle.clear()
        await super().close()


def _kind(export: object) -> str:
    if isinstance(export, wasmtime.FuncType):
        return "function"
    if isinstance(export, wasmtime.MemoryType):
        return "memory"
    return type(export).__name__


async def load_wasm(spec: PluginSpec) -> WasmPlugin:
    """The server's loader for ``type: "wasm"``."""
    return await load(spec, WasmtimeEngine.create)
