"""The server's engine for the WASI kind, on wasmtime: ``WasmtimeWasi``, with the engines,
limits and traps of the wasm kind's (``valor.kinds.wasm.server``). The kind itself (checks,
CGI, failures) is ``valor.kinds.wasi.core``. CPython only."""

from __future__ import annotations

import os
import tempfile

import wasmtime

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ..wasm.limits import WasmLimits
from ..wasm.server import WasmtimeRunner, armed, new_store, trap_failure
from .core import WasiPlugin, check_command
from .core import load as load_wasi_with


class WasmtimeWasi(WasmtimeRunner):
    """The server's engine for the WASI kind: wasmtime's WASI, a fresh instance per run, in a
    worker thread."""

    def __init__(
        self, spec: PluginSpec, limits: WasmLimits, engine: wasmtime.Engine, module: wasmtime.Module
    ) -> None:
        super().__init__(spec, limits, engine)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self._pre = linker.instantiate_pre(module)

    @classmethod
    async def create(cls, spec: PluginSpec, limits: WasmLimits, data: bytes) -> WasmtimeWasi:
        engine, module = await cls.compile(spec, limits, data)
        check_command(spec, [e.name for e in module.exports])
        try:
            return cls(spec, limits, engine, module)
        except wasmtime.WasmtimeError as exc:
            raise PluginLoadError(spec.name, f"linking the WASI program failed: {exc}") from None

    async def run(
        self, argv: list[str], env: dict[str, str], stdin: bytes
    ) -> tuple[bytes, str, int]:
        return await self.threads.run(self._run, argv, env, stdin)

    def _run(self, argv: list[str], env: dict[str, str], stdin: bytes) -> tuple[bytes, str, int]:
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        config = wasmtime.WasiConfig()
        config.argv = argv
        config.env = list(env.items())
        config.stdout_custom = stdout.append
        config.stderr_custom = stderr.append
        stdin_path = None
        if stdin:
            # wasmtime's WASI reads stdin only from a file.
            fd, stdin_path = tempfile.mkstemp(prefix="valor-wasi-")
            with os.fdopen(fd, "wb") as file:
                file.write(stdin)
            config.stdin_file = stdin_path
        store = new_store(self.engine, self.limits)
        store.set_wasi(config)
        code = 0
        try:
            with armed(store, self.limits):
                instance = self._pre.instantiate(store)
                instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as exit_:
            code = exit_.code
        except wasmtime.Trap as trap:
            raise trap_failure(self.spec, self.limits, trap) from None
        finally:
            if stdin_path:
                os.unlink(stdin_path)
        return b"".join(stdout), b"".join(stderr).decode(errors="replace"), code


async def load_wasi(spec: PluginSpec) -> WasiPlugin:
    """The server's loader for ``type: "wasi"``."""
    return await load_wasi_with(spec, WasmtimeWasi.create)
