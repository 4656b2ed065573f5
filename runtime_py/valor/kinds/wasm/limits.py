"""Limits for wasm and WASI plug-ins, read from the plug-in's ``config`` (pure Python).

``max_memory_mb`` caps linear memory (default 64), ``fuel`` caps the instructions one request
may run (default: no cap). The time limit is the manifest's ``timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import PluginLoadError
from ...manifest import PluginSpec

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


PAGE = 64 * 1024
_MAGIC = b"\0asm\x01\0\0\0"
_MEMORY_SECTION = 5


def capped_module(module: bytes, max_memory: int) -> bytes:
    """``module`` with its memories' maximum lowered to ``max_memory``, so ``memory.grow``
    fails past the cap in any engine, the same way in both hosts (a browser has no other way
    to cap a module's own memory). Bytes that are not a wasm module come back unchanged, for
    the engine to reject."""
    if not module.startswith(_MAGIC):
        return module
    pages = max(1, max_memory // PAGE)
    out = bytearray(_MAGIC)
    pos = len(_MAGIC)
    try:
        while pos < len(module):
            section = module[pos]
            size, start = _read_uleb(module, pos + 1)
            body = module[start : start + size]
            if start + size > len(module):
                return module
            if section == _MEMORY_SECTION:
                body = _capped_memories(body, pages)
            out += bytes([section]) + _uleb(len(body)) + body
            pos = start + size
    except IndexError:
        return module
    return bytes(out)


def _capped_memories(body: bytes, pages: int) -> bytes:
    count, pos = _read_uleb(body, 0)
    out = bytearray(_uleb(count))
    for _ in range(count):
        flags = body[pos]
        if flags & ~0x03:  # 64-bit or unknown memories: left as they are
            return body
        minimum, pos = _read_uleb(body, pos + 1)
        maximum = pages
        if flags & 0x01:
            declared, pos = _read_uleb(body, pos)
            maximum = min(declared, pages)
        out += bytes([flags | 0x01]) + _uleb(minimum) + _uleb(maximum)
    return bytes(out + body[pos:])


def _read_uleb(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)
