"""The server host's loaders for the js, wasm, wasi, native and proxy kinds (CPython only).

Each module is imported on first use, so the host starts fast and a missing engine (Deno,
wasmtime) only fails the plug-ins that need it, with a load error that says what to install.
"""

from __future__ import annotations

import importlib

from ..errors import PluginLoadError
from ..manifest import PluginSpec
from . import Loader, Plugin

_MODULES = {
    "js": ("valor.loaders.deno_host", "load_js", "deno"),
    "wasm": ("valor.loaders.wasmtime_host", "load_wasm", "wasmtime"),
    "wasi": ("valor.loaders.wasmtime_host", "load_wasi", "wasmtime"),
    "native": ("valor.loaders.native", "load_native", None),
    "proxy": ("valor.loaders.httpx_proxy", "load_proxy", "httpx"),
}


def _lazy(kind: str) -> Loader:
    module_name, function, package = _MODULES[kind]

    async def load(spec: PluginSpec) -> Plugin:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f" (pip install {package})" if package else ""
            raise PluginLoadError(spec.name, f"{kind} plug-ins need {exc.name}{hint}") from None
        return await getattr(module, function)(spec)

    load.__name__ = function
    return load


SERVER_KIND_LOADERS: dict[str, Loader] = {kind: _lazy(kind) for kind in _MODULES}
