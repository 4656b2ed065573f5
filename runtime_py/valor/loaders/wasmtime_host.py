"""What the wasm and WASI loaders share on the server: wasmtime engines, limits and traps.

Time limits use epoch interruption: one daemon thread ticks every engine, and each call gets
a deadline of the plug-in's timeout (plus a tick, so the runtime's own 504 normally wins and
this only frees the thread). The thread ticks only while wasm runs, so an idle server (or one
answering other kinds) never wakes it. CPython only.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import wasmtime

from ..errors import PluginLoadError
from ..manifest import PluginSpec
from .failures import PluginFailed
from .wasm_limits import WasmLimits

TICK = 0.05
_engines: weakref.WeakSet[wasmtime.Engine] = weakref.WeakSet()
_ticker_lock = threading.Lock()
_ticker: threading.Thread | None = None
_busy = threading.Condition()
_running = 0  # wasm calls in progress, in every engine


def _tick_forever() -> None:
    while True:
        with _busy:
            _busy.wait_for(lambda: _running > 0)
        time.sleep(TICK)
        for engine in list(_engines):
            engine.increment_epoch()


def make_engine(limits: WasmLimits) -> wasmtime.Engine:
    """An engine with epoch interruption (and fuel when the plug-in has a fuel cap)."""
    global _ticker
    config = wasmtime.Config()
    config.epoch_interruption = True
    config.consume_fuel = limits.fuel is not None
    engine = wasmtime.Engine(config)
    _engines.add(engine)
    with _ticker_lock:
        if _ticker is None:
            _ticker = threading.Thread(target=_tick_forever, name="valor-wasm-epoch", daemon=True)
            _ticker.start()
    return engine


def compile_module(spec: PluginSpec, engine: wasmtime.Engine) -> wasmtime.Module:
    """Read and compile the plug-in's module; a missing or bad file is a clear load error."""
    path = Path(spec.path or "")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PluginLoadError(spec.name, f"cannot read {str(path)!r}: {exc.strerror}") from None
    try:
        return wasmtime.Module(engine, data)
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid module"
        raise PluginLoadError(
            spec.name, f"{path.name!r} is not a valid WebAssembly module: {first}"
        ) from None


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
