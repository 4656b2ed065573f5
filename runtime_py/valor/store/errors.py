"""What the store raises. Every error names the key or the store it is about."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the store's errors."""


class KeyInvalid(StoreError, ValueError):
    """A key that is not a non-empty string of at most ``MAX_KEY_BYTES`` UTF-8 bytes."""


class ValueNotStorable(StoreError, TypeError):
    """A value that is neither JSON-able nor ``bytes``."""


class ValueTooLarge(StoreError, ValueError):
    """A value whose encoded form is over ``MAX_VALUE_BYTES``."""


class NotAnInteger(StoreError, TypeError):
    """An increment of a key whose value is not an integer, or past the safe range."""


class BatchInvalid(StoreError, ValueError):
    """An atomic batch with too many operations, a bad version or a bad argument."""


class CursorInvalid(StoreError, ValueError):
    """A ``list`` cursor this store did not hand out for that prefix."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (Redis down, the SQLite file unwritable). Uncaught in a
    plug-in, it answers that plug-in's request with a 503 naming the store."""

    status = 503

    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"store {store!r} is unavailable: {reason}")
        self.store = store
        self.reason = reason


class StoreFull(StoreUnavailable):
    """The store is out of space (disk full, the browser's quota). Answered with a 507."""

    status = 507

    def __init__(self, store: str, reason: str) -> None:
        StoreError.__init__(self, f"store {store!r} is full: {reason}")
        self.store = store
        self.reason = reason
