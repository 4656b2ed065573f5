"""``type: "wasi"``: a WASI command run CGI style, the same in both hosts (pure Python).

Each request runs the program once in a fresh instance (as WAGI does): the environment from
``valor.kinds.wasi.cgi``, the body on stdin, the answer parsed from stdout, stderr to the log.
A non-zero exit or a trap answers 500; past the time limit, 504. Everything but running the
program is here, once; a host gives only its ``WasiEngine``: wasmtime's WASI on the server
(``wasi.server``), Valor's WASI shim in an executor worker in the browser (``wasi.browser``
and ``web/kinds/wasm-executor.mjs``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from typing import Protocol

from ...errors import PluginLoadError
from ...failures import PluginFailed
from ...manifest import PluginSpec
from ...wire import RequestMessage, ResponseMessage
from ..wasm.core import read_module
from ..wasm.limits import WasmLimits, capped_module, wasm_limits
from .cgi import CgiError, cgi_environ, parse_cgi_output

log = logging.getLogger("valor.plugins")


class WasiEngine(Protocol):
    """A host's way of running a WASI program."""

    async def run(
        self, argv: list[str], env: dict[str, str], stdin: bytes
    ) -> tuple[bytes, str, int]:
        """Run the program once, in a fresh instance: its stdout, stderr and exit code."""
        ...

    async def close(self) -> None: ...


EngineFactory = Callable[[PluginSpec, WasmLimits, bytes], Awaitable[WasiEngine]]


class WasiPlugin:
    def __init__(self, spec: PluginSpec, engine: WasiEngine) -> None:
        self.spec = spec
        self.engine = engine

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        env = cgi_environ(message)
        stdout, stderr, code = await self.engine.run(
            [self.spec.name], env, message.get("body") or b""
        )
        if stderr:
            log.warning("plug-in %s stderr: %s", self.spec.name, stderr.rstrip())
        if code != 0:
            raise PluginFailed(500, f"plug-in {self.spec.name!r} exited with code {code}")
        try:
            return parse_cgi_output(stdout)
        except CgiError as exc:
            raise PluginFailed(500, f"plug-in {self.spec.name!r} answered badly: {exc}") from None

    async def close(self) -> None:
        await self.engine.close()


async def load(spec: PluginSpec, make_engine: EngineFactory) -> WasiPlugin:
    """Read the program, cap its memory, and let the host's engine compile it (checking it
    with ``check_command``)."""
    limits = wasm_limits(spec)
    module = capped_module(read_module(spec), limits.max_memory)
    return WasiPlugin(spec, await make_engine(spec, limits, module))


def check_command(spec: PluginSpec, exports: Collection[str]) -> None:
    if "_start" not in exports:
        raise PluginLoadError(
            spec.name, "a WASI plug-in must be a command exporting '_start' (a program with main)"
        )
