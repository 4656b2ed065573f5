"""Plug-in kinds: the one registry that the manifest, both hosts, the build and the scaffold
read, and what a loader is.

A kind is a folder, ``valor/kinds/<kind>/``: its core, shared by both hosts, and one module per
host engine (``server.py``, ``browser.py``) where the hosts differ. ``KINDS`` lists them, so
adding a kind is one folder and one entry. What several kinds share (the helper processes,
their frames, the wasm and native ABI, the browser's JavaScript bridge) is in ``shared/``.

A loader turns a validated ``PluginSpec`` into a running ``Plugin``: every kind is a loader
behind the same runtime, so routing, headers, built-ins, limits and errors behave the same for
all kinds. A host passes the loaders it supports to the ``Runtime``; a kind a host lacks is a
load error.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..errors import PluginLoadError

if TYPE_CHECKING:  # the manifest reads this registry, so this module imports neither at run time
    from ..manifest import PluginSpec
    from ..wire import RequestMessage, ResponseMessage


class Plugin(Protocol):
    """A loaded plug-in: receives a wire request, answers a wire response."""

    async def handle(self, message: RequestMessage) -> ResponseMessage: ...

    async def close(self) -> None: ...


Loader = Callable[["PluginSpec"], Awaitable[Plugin]]
"""Builds a plug-in from its spec. Raises ``PluginLoadError`` with a message a person can act on."""


@dataclass(frozen=True, slots=True)
class Forwarding:
    """What the runtime adds to a request, for a plug-in that takes it beside the request
    instead of as headers (an ASGI app: its scope's ``root_path``, ``client`` and extension).
    Such a plug-in has ``handle_forwarded(message, forwarding)``; its message's headers are the
    client's, as the host got them."""

    request_id: str
    prefix: str  # the mount prefix, under the host's root paths
    client: tuple[str, int] | None  # the peer's address, when the host knows it


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of plug-in: what its manifest entry takes, and where each host's loader is."""

    name: str
    server: str
    """The server host's loader, ``"module:function"`` under ``valor.kinds``; imported on the
    first load, so a missing engine (Deno, wasmtime) fails only the plug-ins that need it."""
    browser: str | None = None
    """The browser host's loader, likewise; ``None`` for a kind only the server runs."""
    engine: str | None = None
    """The package that provides the server's engine, named when its import fails."""
    server_only: str | None = None
    """Why a browser cannot run the kind: ``valor build`` leaves it out, and the browser host
    answers its prefix with this reason."""
    takes_path: bool = True
    """The entry names a file (``path``, relative to the manifest); otherwise an upstream
    ``url``."""
    takes_app: bool = False
    """The entry may name an application in its module (``app``)."""
    isolates: bool = False
    """The entry may ask for a helper process (``"isolation": "process"``)."""
    site_files: tuple[tuple[str, str], ...] = ()
    """What ``valor build`` ships for the browser's engine: ``(site name, file under valor/)``."""


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "python",
            server="python.core:load_python",
            browser="python.core:load_python",
            isolates=True,
        ),
        Kind(
            "js",
            server="js.server:load_js",
            browser="js.browser:load_js",
            engine="deno",
            site_files=(
                ("kinds/pool.mjs", "kinds/js/scripts/pool.mjs"),
                ("kinds/boot.mjs", "kinds/js/scripts/boot.mjs"),
            ),
        ),
        Kind(
            "wasm",
            server="wasm.server:load_wasm",
            browser="wasm.browser:load_wasm",
            engine="wasmtime",
        ),
        Kind(
            "wasi",
            server="wasi.server:load_wasi",
            browser="wasi.browser:load_wasi",
            engine="wasmtime",
        ),
        Kind(
            "native",
            server="native.server:load_native",
            server_only="native plug-ins are shared libraries, which a browser cannot load",
        ),
        Kind("asgi", server="asgi.core:load_asgi", browser="asgi.core:load_asgi", takes_app=True),
        Kind(
            "proxy",
            server="proxy.server:load_proxy",
            browser="proxy.browser:load_proxy",
            engine="httpx",
            takes_path=False,
        ),
    )
}
"""Every kind, in the order the manifest's errors list them."""


def server_loaders() -> dict[str, Loader]:
    """``{kind: loader}`` for the server host; each imports its engine on the first load."""
    return {kind.name: _imported_on_first_load(kind) for kind in KINDS.values()}


def browser_loaders() -> dict[str, Loader]:
    """``{kind: loader}`` for the browser host, imported now (a boot snapshot then holds them);
    a kind only the server runs gets a loader that says why it cannot load."""
    return {
        kind.name: _import(kind.browser) if kind.browser else _server_only(kind)
        for kind in KINDS.values()
    }


def site_files() -> dict[str, str]:
    """``{site name: file under valor/}``: what ``valor build`` ships for the browser's engines."""
    return {name: source for kind in KINDS.values() for name, source in kind.site_files}


def _import(where: str) -> Loader:
    module, _, function = where.partition(":")
    loader: Loader = getattr(importlib.import_module(f"{__name__}.{module}"), function)
    return loader


def _imported_on_first_load(kind: Kind) -> Loader:
    async def load(spec: PluginSpec) -> Plugin:
        try:
            loader = _import(kind.server)
        except ImportError as exc:
            hint = f" (pip install {kind.engine})" if kind.engine else ""
            raise PluginLoadError(
                spec.name, f"{kind.name} plug-ins need {exc.name}{hint}"
            ) from None
        return await loader(spec)

    load.__name__ = kind.server.partition(":")[2]
    return load


def _server_only(kind: Kind) -> Loader:
    async def load(spec: PluginSpec) -> Plugin:
        raise PluginLoadError(
            spec.name,
            f"{kind.server_only}; serve this one with the server host (valor serve), "
            "or build with --fallback URL to send its requests there",
        )

    load.__name__ = f"load_{kind.name}"
    return load
