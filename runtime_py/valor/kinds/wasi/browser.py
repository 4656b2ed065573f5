"""The browser's engine for the WASI kind (Pyodide only): Valor's WASI shim in the wasm kind's
executor worker (``valor.kinds.wasm.browser``). The kind itself (checks, CGI, failures) is
``valor.kinds.wasi.core``, shared with the server."""

from __future__ import annotations

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ..shared.browser_ffi import field, js_bytes
from ..wasm.browser import Executor, start_executor, trap_or_error
from ..wasm.limits import WasmLimits
from .core import WasiPlugin, check_command
from .core import load as load_wasi_with


class BrowserWasiEngine:
    """The browser's engine for the WASI kind (``valor.kinds.wasi.core`` holds the rest): Valor's
    WASI shim in an executor worker, a fresh instance per run."""

    def __init__(self, spec: PluginSpec, executor: Executor) -> None:
        self.spec = spec
        self.executor = executor

    @classmethod
    async def create(cls, spec: PluginSpec, limits: WasmLimits, data: bytes) -> BrowserWasiEngine:
        executor = await start_executor(spec, "wasi", data)
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
            raise trap_or_error(self.spec, answer)
        return answer.stdout.to_bytes(), str(field(answer, "stderr") or ""), int(answer.code)

    async def close(self) -> None:
        self.executor.terminate()


async def load_wasi(spec: PluginSpec) -> WasiPlugin:
    return await load_wasi_with(spec, BrowserWasiEngine.create)
