"""Loaders turn a validated ``PluginSpec`` into a running ``Plugin``.

Every kind of plug-in (python, js, wasm, wasi, native, proxy) is a loader behind the same
runtime, so routing, headers, built-ins, limits and errors behave the same for all kinds.
A host passes the loaders it supports to the ``Runtime``; a kind a host lacks is a load error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ..manifest import PluginSpec
from ..wire import RequestMessage, ResponseMessage


class Plugin(Protocol):
    """A loaded plug-in: receives a wire request, answers a wire response."""

    async def handle(self, message: RequestMessage) -> ResponseMessage: ...

    async def close(self) -> None: ...


Loader = Callable[[PluginSpec], Awaitable[Plugin]]
"""Builds a plug-in from its spec. Raises ``PluginLoadError`` with a message a person can act on."""
