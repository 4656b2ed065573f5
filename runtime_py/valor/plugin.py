"""The plug-in API: ``@vlugin`` marks a module's hooks, ``Context`` carries config and state."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

HOOKS = ("on_create", "on_request")


def vlugin(function: F) -> F:
    """Mark ``on_request`` (and optionally ``on_create``) as a Valor plug-in hook.

    ``on_request(req)``, or ``on_request(ctx, req)`` when the module also has ``on_create(ctx)``.
    Both may be sync or async.
    """
    if function.__name__ not in HOOKS:
        raise TypeError(
            f"@vlugin marks one of {', '.join(HOOKS)}; got a function named {function.__name__!r}"
        )
    function.__vlugin__ = True  # type: ignore[attr-defined]
    return function


class Context:
    """What ``on_create`` receives and ``on_request`` gets back: the plug-in's name, its
    manifest ``config``, a logger, and any attributes the plug-in sets to keep state."""

    def __init__(self, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config = config
        self.log = logging.getLogger(f"valor.plugin.{name}")

    def __repr__(self) -> str:
        return f"Context(name={self.name!r})"
