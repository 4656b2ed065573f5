"""``type: "wasm"``: a WebAssembly module, the same in both hosts (pure Python).

ABI (see ``docs/kinds.md``): the module imports nothing and exports ``memory``,
``alloc(len: i32) -> i32`` and ``handle(ptr: i32, len: i32) -> i64``. The host writes the
request (``valor.kinds.shared.abi`` format) at ``alloc``'s pointer, calls ``handle`` and reads the
answer at ``(result >> 32, result & 0xffffffff)``. Each instance runs ``_initialize`` once if
exported, then ``valor_init(ptr, len) -> i32`` if exported, with the plug-in's ``config`` as
JSON at ``alloc``'s pointer (non-zero: the instance cannot start).

Everything but running wasm is here, once: the checks, the ABI's steps, the memory cap and the
failures. The steps are a generator of ``Step``s (call an export, write, read, memory size), so
the server runs them in a thread and the browser over messages to its executor worker. A host
gives only its ``WasmEngine``: wasmtime on the server (``wasm.server``), the browser's
``WebAssembly`` in a worker (``wasm.browser`` and ``web/kinds/wasm-executor.mjs``), which
instantiate the module and run steps on an instance.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Generator
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ...errors import PluginLoadError
from ...failures import PluginFailed
from ...manifest import PluginSpec
from ...wire import RequestMessage, ResponseMessage
from ..shared.abi import AbiError, decode_response, encode_config, encode_request, unpack_pointer
from .limits import WasmLimits, capped_module, wasm_limits

T = TypeVar("T")
# ("call", export, *args) -> its result | ("write", ptr, data) | ("read", ptr, len) -> bytes
# | ("size",) -> the memory's size in bytes
Step = tuple[Any, ...]
Steps = Generator[Step, Any, T]

# What the module must export, by kind ("function", "memory", as WebAssembly names them).
REQUIRED_EXPORTS = {"memory": "memory", "alloc": "function", "handle": "function"}


class WasmEngine(Protocol):
    """A host's way of running a module's instances."""

    async def run(self, steps: Callable[[], Steps[T]]) -> T:
        """Run ``steps()`` on an idle instance (a new one, started with ``start_steps``, when
        there is none). An instance whose steps failed or were cancelled is dropped."""
        ...

    async def close(self) -> None: ...


EngineFactory = Callable[[PluginSpec, WasmLimits, bytes], Awaitable[WasmEngine]]


class WasmPlugin:
    def __init__(self, spec: PluginSpec, limits: WasmLimits, engine: WasmEngine) -> None:
        self.spec = spec
        self.limits = limits
        self.engine = engine

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        return await self.engine.run(lambda: exchange(self.spec, self.limits, message))

    async def close(self) -> None:
        await self.engine.close()


async def load(spec: PluginSpec, make_engine: EngineFactory) -> WasmPlugin:
    """Read the module, cap its memory, and let the host's engine compile and check it and start
    one instance (so a bad module fails at load)."""
    limits = wasm_limits(spec)
    module = capped_module(read_module(spec), limits.max_memory)
    return WasmPlugin(spec, limits, await make_engine(spec, limits, module))


def read_module(spec: PluginSpec) -> bytes:
    path = Path(spec.path or "")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PluginLoadError(spec.name, f"cannot read {str(path)!r}: {exc.strerror}") from None


def invalid_module(spec: PluginSpec, error: str) -> PluginLoadError:
    """The load error for bytes an engine could not compile."""
    first = error.strip().splitlines()[0] if error.strip() else "invalid module"
    name = Path(spec.path or "").name
    return PluginLoadError(spec.name, f"{name!r} is not a valid WebAssembly module: {first}")


def check_module(spec: PluginSpec, imports: list[str], exports: dict[str, str]) -> None:
    """A wasm plug-in imports nothing and exports the ABI (``exports``: name -> kind)."""
    if imports:
        raise PluginLoadError(
            spec.name,
            f"a wasm plug-in must import nothing, this one imports {', '.join(imports[:3])} "
            "(use type 'wasi' for WASI programs)",
        )
    for name, kind in REQUIRED_EXPORTS.items():
        if exports.get(name) != kind:
            raise PluginLoadError(
                spec.name, f"the module must export {name!r} (exports: {', '.join(exports)})"
            )


def start_steps(spec: PluginSpec, limits: WasmLimits, exports: Collection[str]) -> Steps[None]:
    """What a new instance runs once: ``_initialize``, then ``valor_init`` with the config."""
    if "_initialize" in exports:
        yield ("call", "_initialize")
    if "valor_init" in exports:
        config = encode_config(spec.config)
        ptr = yield from _put(spec, limits, config)
        code = yield ("call", "valor_init", ptr, len(config))
        if code != 0:
            raise PluginFailed(500, f"plug-in {spec.name!r}: valor_init() returned {code}")


def exchange(spec: PluginSpec, limits: WasmLimits, message: RequestMessage) -> Steps[Any]:
    """One request: write it, call ``handle``, read and check the answer."""
    data = encode_request(message)
    ptr = yield from _put(spec, limits, data)
    out_ptr, out_len = unpack_pointer((yield ("call", "handle", ptr, len(data))))
    if not out_ptr:
        raise PluginFailed(500, f"plug-in {spec.name!r}: handle() returned no answer")
    if out_ptr + out_len > (yield ("size",)):
        raise PluginFailed(500, f"plug-in {spec.name!r}: answer is outside its memory")
    answer = yield ("read", out_ptr, out_len)
    try:
        return decode_response(answer)
    except AbiError as exc:
        raise PluginFailed(500, f"plug-in {spec.name!r} answered badly: {exc}") from None


def _put(spec: PluginSpec, limits: WasmLimits, data: bytes) -> Steps[int]:
    """``data`` written at ``alloc``'s pointer (0 means the module could not grow its memory,
    which the cap stops at ``max_memory_mb`` in both hosts)."""
    ptr = (yield ("call", "alloc", len(data))) & 0xFFFF_FFFF
    if not ptr:
        raise PluginFailed(
            500,
            f"plug-in {spec.name!r} could not allocate {len(data)} bytes "
            f"(memory cap {limits.max_memory // (1024 * 1024)} MiB)",
        )
    yield ("write", ptr, data)
    return ptr


def run_steps(steps: Steps[T], do: Callable[[Step], Any]) -> T:
    """Drive ``steps`` with ``do`` (blocking: the server, in a worker thread)."""
    done, value = _advance(steps, None)
    while not done:
        done, value = _advance(steps, do(value))
    return value


async def run_steps_async(steps: Steps[T], do: Callable[[Step], Awaitable[Any]]) -> T:
    """Drive ``steps`` with an async ``do`` (the browser, over messages)."""
    done, value = _advance(steps, None)
    while not done:
        done, value = _advance(steps, await do(value))
    return value


def _advance(steps: Steps[T], result: Any) -> tuple[bool, Any]:
    """``steps``' next step given the last one's ``result``, or (True, its answer)."""
    try:
        return False, steps.send(result)
    except StopIteration as done:
        return True, done.value
