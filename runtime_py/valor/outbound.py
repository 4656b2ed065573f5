"""Where a plug-in's calls out start from: the plug-in and request being run, and each
plug-in's client (``ctx.http``, ``valor.http_client()``), made on first use.

Standard library only: the runtime imports this module in both hosts. The client itself, which
needs httpx, is ``valor.client``, imported when a plug-in first asks for it.
"""

from __future__ import annotations

import weakref
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, NamedTuple

from .manifest import PluginSpec

if TYPE_CHECKING:
    import httpx

MAX_DEPTH = 8
"""How deeply plug-ins' calls to each other may nest: the call past it answers 508."""


class Calling(NamedTuple):
    """A plug-in being run by a runtime: for a request (its correlation id and origin), or
    while it loads (neither). ``caller`` is the one whose call to it this is, if any. A named
    tuple: one is made per request, and a frozen dataclass cost three times as much."""

    runtime: Any  # valor.runtime.Runtime; not imported, which would be circular
    spec: PluginSpec
    correlation_id: str | None = None
    origin: str | None = None
    caller: Calling | None = None

    def chain(self) -> list[str]:
        """The plug-ins' names from the first caller to this one."""
        names, calling = [], self
        while calling is not None:
            names.append(calling.spec.name)
            calling = calling.caller
        return names[::-1]


CALLING: ContextVar[Calling | None] = ContextVar("valor_calling", default=None)


def calling() -> Calling | None:
    """The plug-in Valor runs in this context, or None."""
    return CALLING.get()


def http_client() -> httpx.AsyncClient:
    """The calling plug-in's ``httpx.AsyncClient``: the one ``ctx.http`` is. Call it while
    Valor runs the plug-in: in a request, at load (``on_create``, an ASGI app's lifespan), or
    in a task started from either."""
    current = CALLING.get()
    if current is None:
        raise RuntimeError(
            "valor.http_client() is for a plug-in Valor runs: call it while it handles a "
            "request or loads, or in a task started then"
        )
    return client_for(current.runtime, current.spec)


# By runtime, then plug-in name; a runtime dropped without close() takes its entry along.
_clients: weakref.WeakKeyDictionary[Any, dict[str, tuple[PluginSpec, Any]]] = (
    weakref.WeakKeyDictionary()
)


def client_for(runtime: Any, spec: PluginSpec) -> httpx.AsyncClient:
    """The client of plug-in ``spec`` in ``runtime``, made on first use."""
    clients = _clients.setdefault(runtime, {})
    known = clients.get(spec.name)
    if known is not None and known[0] is spec:
        return known[1]
    try:
        from .client import make_client  # httpx: only for plug-ins that call out
    except ModuleNotFoundError as exc:
        if exc.name != "httpx":
            raise
        raise RuntimeError(
            f'plug-in {spec.name!r} calls out, which needs httpx: add "httpx" to its '
            '"requirements" in the manifest (a browser bundle ships only what they list)'
        ) from None
    client = make_client(runtime, spec)
    clients[spec.name] = (spec, client)
    return client


async def release(runtime: Any, name: str | None = None) -> None:
    """Close plug-in ``name``'s client in ``runtime`` (every plug-in's when None)."""
    clients = _clients.get(runtime)
    if not clients:
        return
    names = list(clients) if name is None else [name]
    for each in names:
        found = clients.pop(each, None)
        if found is not None:
            await found[1].aclose()
    if not clients:
        _clients.pop(runtime, None)
