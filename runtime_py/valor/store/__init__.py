"""The plug-ins' store: a key-value store per plug-in, the same in both hosts (docs/state.md).

``Store`` is what plug-ins use (``ctx.store``); a ``Backend`` keeps the entries: ``memory``,
``sqlite`` and ``redis`` on the server, IndexedDB in the browser. This package's core imports
only the standard library, so it runs in Pyodide too.
"""

from .api import Atomic, Committed, Entry, Page, Store, SyncStore
from .backend import Backend, Check, Commit, Mutation, Record
from .errors import (
    BatchInvalid,
    CursorInvalid,
    KeyInvalid,
    NotAnInteger,
    StoreError,
    StoreFull,
    StoreUnavailable,
    ValueNotStorable,
    ValueTooLarge,
)
from .limits import MAX_BATCH_OPERATIONS, MAX_KEY_BYTES, MAX_LIST_LIMIT, MAX_VALUE_BYTES
from .memory import MemoryBackend

__all__ = [
    "MAX_BATCH_OPERATIONS",
    "MAX_KEY_BYTES",
    "MAX_LIST_LIMIT",
    "MAX_VALUE_BYTES",
    "Atomic",
    "Backend",
    "BatchInvalid",
    "Check",
    "Commit",
    "Committed",
    "CursorInvalid",
    "Entry",
    "KeyInvalid",
    "MemoryBackend",
    "Mutation",
    "NotAnInteger",
    "Page",
    "Record",
    "Store",
    "StoreError",
    "StoreFull",
    "StoreUnavailable",
    "SyncStore",
    "ValueNotStorable",
    "ValueTooLarge",
]
