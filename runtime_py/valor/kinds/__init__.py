"""Loaders turn a validated ``PluginSpec`` into a running ``Plugin``.

Every kind of plug-in (python, js, wasm, wasi, native, proxy) is a loader behind the same
runtime, so routing, headers, built-ins, limits and errors behave the same for all kinds.
A host passes the loaders it supports to the ``Runtime``; a kind a host lacks is a load error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from ..manifest import PluginSpec
from ..wire import RequestMessage, ResponseMessage


class Plugin(Protocol):
    """A loaded plug-in: receives a wire request, answers a wire response."""

    async def handle(self, message: RequestMessage) -> ResponseMessage: ...

    async def close(self) -> None: ...


Loader = Callable[[PluginSpec], Awaitable[Plugin]]
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
