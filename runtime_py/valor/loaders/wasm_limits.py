"""Limits for wasm and WASI plug-ins, read from the plug-in's ``config`` (pure Python).

``max_memory_mb`` caps linear memory (default 64), ``fuel`` caps the instructions one request
may run (default: no cap). The time limit is the manifest's ``timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PluginLoadError
from ..manifest import PluginSpec

DEFAULT_MAX_MEMORY_MB = 64


@dataclass(frozen=True)
class WasmLimits:
    max_memory: int
    fuel: int | None
    timeout: float


def wasm_limits(spec: PluginSpec) -> WasmLimits:
    """The limits for ``spec``; a bad value is a load error naming the field."""
    memory = spec.config.get("max_memory_mb", DEFAULT_MAX_MEMORY_MB)
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or memory <= 0:
        raise PluginLoadError(
            spec.name, f"config 'max_memory_mb' must be a positive number, got {memory!r}"
        )
    fuel = spec.config.get("fuel")
    if fuel is not None and (isinstance(fuel, bool) or not isinstance(fuel, int) or fuel <= 0):
        raise PluginLoadError(spec.name, f"config 'fuel' must be a positive integer, got {fuel!r}")
    return WasmLimits(max_memory=int(memory * 1024 * 1024), fuel=fuel, timeout=spec.timeout)
