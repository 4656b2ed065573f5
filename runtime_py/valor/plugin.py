"""The plug-in API: ``@vlugin`` marks a module's request handler, ``Context`` is what the
plug-in's hooks share: Valor's name, config and logger, and the plug-in's own ``state``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .store import Store

F = TypeVar("F", bound=Callable[..., Any])

CREATE_HOOK = "on_create"


def vlugin(function: F) -> F:
    """Mark ``function`` as the module's request handler, whatever its name.

    The handler takes ``(req)``, or ``(ctx, req)`` when the module also has an ``on_create(ctx)``
    creation hook (which ``@vlugin`` may mark too). Either may be sync or async. A module has
    one handler.
    """
    role = "create" if function.__name__ == CREATE_HOOK else "handler"
    function.__vlugin__ = role  # type: ignore[attr-defined]
    return function


def is_handler(value: object) -> bool:
    """Whether ``value`` is a function ``@vlugin`` marked as a request handler."""
    return callable(value) and getattr(value, "__vlugin__", None) == "handler"


class State(SimpleNamespace):
    """The plug-in's own state, as attributes (``ctx.state.notes = {}``), like Starlette's
    ``State``. It lives as long as the loaded plug-in."""


class Context:
    """What ``on_create`` receives and the handler gets back: the plug-in's ``name``, its
    manifest ``config``, a logger ``log`` (``valor.plugin.<name>``), ``state``, where the
    plug-in keeps whatever it likes for as long as it is loaded, and ``store``, its key-value
    store, shared by every worker and kept across restarts (docs/state.md). Setting any other
    attribute is an error naming ``ctx.state``, so plug-in state never shadows Valor's own
    attributes."""

    __slots__ = ("_store", "config", "log", "name", "state")

    def __init__(self, name: str, config: dict[str, Any], store: Store | None = None) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "config", config)
        object.__setattr__(self, "log", logging.getLogger(f"valor.plugin.{name}"))
        object.__setattr__(self, "state", State())
        object.__setattr__(self, "_store", store)

    @property
    def store(self) -> Store:
        """The plug-in's store: ``await ctx.store.get(key)``, ``ctx.store.sync`` in sync code."""
        if self._store is None:
            raise AttributeError("store")  # __getattr__ says why
        return self._store

    def __getattr__(self, name: str) -> Any:
        if name == "store":
            raise AttributeError(
                f"plug-in {self.name!r} has no store here: a plug-in with isolation 'process' "
                "has none, and neither has a Context made outside a runtime"
            )
        raise AttributeError(
            f"ctx has no attribute {name!r}: the plug-in's own state lives on ctx.state "
            f"(ctx.state.{name})"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set ctx.{name}: ctx.name, ctx.config, ctx.log and ctx.store are Valor's; "
            f"keep the plug-in's own state on ctx.state (ctx.state.{name} = ...)"
        )

    def __repr__(self) -> str:
        return f"Context(name={self.name!r})"
