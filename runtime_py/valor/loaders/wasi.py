"""Server loader for ``type: "wasi"``: a WASI command run CGI style by wasmtime's WASI.

Each request runs the program once in a fresh instance (as WAGI does): the environment from
``valor.loaders.cgi``, the body on stdin, the answer parsed from stdout, stderr to the log.
A non-zero exit or a trap answers 500; past the time limit, 504.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile

import wasmtime

from ..concurrency import DEFAULT_THREADS, Threads
from ..errors import PluginLoadError
from ..manifest import PluginSpec
from ..wire import RequestMessage, ResponseMessage
from .cgi import CgiError, cgi_environ, parse_cgi_output
from .failures import PluginFailed
from .wasm_limits import WasmLimits, wasm_limits
from .wasmtime_host import armed, compile_module, make_engine, new_store, trap_failure

log = logging.getLogger("valor.plugins")


class WasiPlugin:
    def __init__(
        self, spec: PluginSpec, engine: wasmtime.Engine, module: wasmtime.Module, limits: WasmLimits
    ) -> None:
        self.spec = spec
        self.limits = limits
        self._engine = engine
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        self._pre = linker.instantiate_pre(module)
        self._threads = Threads(spec.name, spec.limits.get("threads", DEFAULT_THREADS))

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        try:
            return await self._threads.run(self._run, message)
        except PluginFailed as failure:
            return failure.answer()

    def _run(self, message: RequestMessage) -> ResponseMessage:
        stdout: list[bytes] = []
        stderr: list[bytes] = []
        config = wasmtime.WasiConfig()
        config.argv = [self.spec.name]
        config.env = list(cgi_environ(message).items())
        config.stdout_custom = stdout.append
        config.stderr_custom = stderr.append
        body = message.get("body") or b""
        stdin_path = None
        if body:
            # wasmtime's WASI reads stdin only from a file.
            fd, stdin_path = tempfile.mkstemp(prefix="valor-wasi-")
            with os.fdopen(fd, "wb") as file:
                file.write(body)
            config.stdin_file = stdin_path
        store = new_store(self._engine, self.limits)
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
            if stderr:
                text = b"".join(stderr).decode(errors="replace").rstrip()
                log.warning("plug-in %s stderr: %s", self.spec.name, text)
        if code != 0:
            raise PluginFailed(500, f"plug-in {self.spec.name!r} exited with code {code}")
        try:
            return parse_cgi_output(b"".join(stdout))
        except CgiError as exc:
            raise PluginFailed(500, f"plug-in {self.spec.name!r} answered badly: {exc}") from None

    async def close(self) -> None:
        self._threads.close()


async def load_wasi(spec: PluginSpec) -> WasiPlugin:
    """Compile the program and check that it is a WASI command (exports ``_start``)."""
    limits = wasm_limits(spec)
    engine = make_engine(limits)
    module = await asyncio.to_thread(compile_module, spec, engine)
    if not any(e.name == "_start" for e in module.exports):
        raise PluginLoadError(
            spec.name, "a WASI plug-in must be a command exporting '_start' (a program with main)"
        )
    try:
        return WasiPlugin(spec, engine, module, limits)
    except wasmtime.WasmtimeError as exc:
        raise PluginLoadError(spec.name, f"linking the WASI program failed: {exc}") from None
