"""What the browser host's loaders use to speak to JavaScript (Pyodide only): URLs in the
bundle, bytes and objects for ``postMessage``, and JS values read back."""

from __future__ import annotations

from typing import Any

from ...errors import PluginLoadError
from ...manifest import PluginSpec

BUNDLE_ROOT = "/valor/"


def site_url(relative: str) -> str:
    """A URL in the bundle, resolved against the runtime worker's own URL."""
    from js import URL, location

    return URL.new(relative, location.href).href


def plugin_url(spec: PluginSpec) -> str:
    path = str(spec.path or "")
    if not path.startswith(BUNDLE_ROOT):
        raise PluginLoadError(spec.name, f"{path!r} is not a file in the bundle")
    return site_url(path[len(BUNDLE_ROOT) :])


KINDS_IN_WORKERS = frozenset({"js", "wasm", "wasi"})
"""Kinds whose plug-ins the browser host runs in a worker of their own, started from the
runtime's worker."""


def require_workers(spec: PluginSpec) -> None:
    """A clear load error where the runtime's worker cannot start workers: Chromium's shared
    workers cannot (``valor_page``'s shared runtime, which such manifests therefore skip)."""
    import js

    if not hasattr(js, "Worker"):
        raise PluginLoadError(
            spec.name,
            f"a {spec.type} plug-in runs in a worker of its own, and this runtime's worker "
            "cannot start workers (a shared worker: valor_page's shared runtime, which a "
            "manifest with such plug-ins does not use; for one mounted by a test, set the ini "
            "option valor_fresh_context = true)",
        )


def js_bytes(data: bytes) -> Any:
    from js import Uint8Array

    array = Uint8Array.new(len(data))
    if data:
        array.assign(data)
    return array


def js_object(value: dict[str, Any]) -> Any:
    from js import Object
    from pyodide.ffi import to_js

    return to_js(value, dict_converter=Object.fromEntries)


def field(value: Any, name: str) -> Any:
    """A JS object's property, ``None`` when it is missing, undefined or null."""
    found = getattr(value, name, None)
    return None if found is None or type(found).__name__ == "JsNull" else found


def js_message(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
