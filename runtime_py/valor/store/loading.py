"""How a loader gets the store of the plug-in it loads: the runtime opens it and sets it here
while the loader runs (loaders take only the plug-in's spec)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from .api import Store

_loading: ContextVar[Store | None] = ContextVar("valor_store_loading", default=None)


@contextmanager
def loading_with(store: Store) -> Iterator[None]:
    token = _loading.set(store)
    try:
        yield
    finally:
        _loading.reset(token)


def store_being_loaded() -> Store | None:
    """The store of the plug-in being loaded, or None outside a runtime's load."""
    return _loading.get()
