"""Server loader for ``type: "wasm"``: a WebAssembly module run by wasmtime.

ABI (see ``docs/kinds.md``): the module imports nothing and exports ``memory``,
``alloc(len: i32) -> i32`` and ``handle(ptr: i32, len: i32) -> i64``. The host writes the
request (``valor.loaders.abi`` format) at ``alloc``'s pointer, calls ``handle`` and reads the
answer at ``(result >> 32, result & 0xffffffff)``; ``_initialize`` runs once if exported.
Instances are pooled; a trap throws its instance away, so the next request gets a fresh one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import wasmtime

from ..concurrency import DEFAULT_THREADS, Threads
from ..errors import PluginLoadError
from ..manifest import PluginSpec
from ..wire import RequestMessage, ResponseMessage
from .abi import AbiError, decode_response, encode_request, unpack_pointer
from .failures import PluginFailed
from .wasm_limits import WasmLimits, wasm_limits
from .wasmtime_host import armed, compile_module, make_engine, new_store, trap_failure

REQUIRED_EXPORTS = {
    "memory": wasmtime.MemoryType,
    "alloc": wasmtime.FuncType,
    "handle": wasmtime.FuncType,
}


@dataclass
class _Instance:
    store: wasmtime.Store
    memory: wasmtime.Memory
    alloc: wasmtime.Func
    handle: wasmtime.Func


class WasmPlugin:
    def __init__(
        self, spec: PluginSpec, engine: wasmtime.Engine, module: wasmtime.Module, limits: WasmLimits
    ) -> None:
        self.spec = spec
        self.limits = limits
        self._engine = engine
        self._module = module
        self._idle: list[_Instance] = [self._instantiate()]
        self._threads = Threads(spec.name, spec.limits.get("threads", DEFAULT_THREADS))

    def _instantiate(self) -> _Instance:
        store = new_store(self._engine, self.limits)
        with armed(store, self.limits):
            instance = wasmtime.Instance(store, self._module, [])
            exports = instance.exports(store)
            if "_initialize" in exports:
                exports["_initialize"](store)
        return _Instance(store, exports["memory"], exports["alloc"], exports["handle"])

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        try:
            return await self._threads.run(self._call, encode_request(message))
        except PluginFailed as failure:
            return failure.answer()

    def _call(self, data: bytes) -> ResponseMessage:
        # Runs in a worker thread: wasmtime releases the GIL while wasm runs.
        try:
            slot = self._idle.pop()
        except IndexError:
            slot = self._instantiate()
        store = slot.store
        with armed(store, self.limits):
            try:
                ptr = slot.alloc(store, len(data))
                if not ptr:
                    raise PluginFailed(
                        500,
                        f"plug-in {self.spec.name!r} could not allocate {len(data)} bytes "
                        f"(memory cap {self.limits.max_memory // (1024 * 1024)} MiB)",
                    )
                slot.memory.write(store, data, ptr)
                out_ptr, out_len = unpack_pointer(slot.handle(store, ptr, len(data)))
                if not out_ptr:
                    raise PluginFailed(
                        500, f"plug-in {self.spec.name!r}: handle() returned no answer"
                    )
                if out_ptr + out_len > slot.memory.data_len(store):
                    raise PluginFailed(
                        500, f"plug-in {self.spec.name!r}: answer is outside its memory"
                    )
                answer = bytes(slot.memory.read(store, out_ptr, out_ptr + out_len))
            except wasmtime.Trap as trap:
                raise trap_failure(self.spec, self.limits, trap) from None
        self._idle.append(slot)
        try:
            return decode_response(answer)
        except AbiError as exc:
            raise PluginFailed(500, f"plug-in {self.spec.name!r} answered badly: {exc}") from None

    async def close(self) -> None:
        self._idle.clear()
        self._threads.close()


async def load_wasm(spec: PluginSpec) -> WasmPlugin:
    """Compile and check the module, and start one instance (so a bad module fails at load)."""
    limits = wasm_limits(spec)
    engine = make_engine(limits)
    module = compile_module(spec, engine)
    imports = [f"{i.module}.{i.name}" for i in module.imports]
    if imports:
        raise PluginLoadError(
            spec.name,
            f"a wasm plug-in must import nothing, this one imports {', '.join(imports[:3])} "
            "(use type 'wasi' for WASI programs)",
        )
    exports = {e.name: e.type for e in module.exports}
    for name, kind in REQUIRED_EXPORTS.items():
        if not isinstance(exports.get(name), kind):
            raise PluginLoadError(
                spec.name, f"the module must export {name!r} (exports: {', '.join(exports)})"
            )
    try:
        return await asyncio.to_thread(WasmPlugin, spec, engine, module, limits)
    except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
        raise PluginLoadError(spec.name, f"instantiating the module failed: {exc}") from None
