"""The store's limits, the same for every backend, and the checks that enforce them.

Keys: non-empty strings of at most 512 bytes in UTF-8, without NUL (Cloudflare KV's key limit;
Spin's is lower, Deno KV's higher). Values: at most 64 KiB once encoded (Deno KV's limit): an
entry is read whole on every ``get``, by every worker and tab, so it stays small; bigger data
belongs in files or object storage, with its name in the store.
"""

from __future__ import annotations

from .errors import BatchInvalid, KeyInvalid

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 64 * 1024
MAX_BATCH_OPERATIONS = 100
"""Checks and mutations of one atomic batch, together."""
MAX_LIST_LIMIT = 1000
MAX_SAFE_INTEGER = 2**53 - 1
"""Increments stay within JavaScript's exact integers: the values are read by JS clients too
(and by Redis's Lua, whose numbers are doubles)."""


def check_key(key: object) -> str:
    """``key`` if it is a valid key, else ``KeyInvalid`` naming it."""
    if not isinstance(key, str):
        raise KeyInvalid(f"a store key must be a str, got {type(key).__name__} {key!r}")
    if not key:
        raise KeyInvalid("a store key must not be empty")
    if "\x00" not in key and key.isascii() and len(key) <= MAX_KEY_BYTES:
        return key  # the usual key: one byte a character, nothing to encode to count them
    if "\x00" in key:
        raise KeyInvalid(f"store key {key!r} contains a NUL character")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise KeyInvalid(f"store key {key!r} is not valid Unicode (a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise KeyInvalid(
            f"store key {key[:40]!r}... is {size} bytes in UTF-8; the limit is {MAX_KEY_BYTES}"
        )
    return key


def check_prefix(prefix: object) -> str:
    """A ``list`` prefix: like a key, but it may be empty."""
    if prefix == "":
        return ""
    return check_key(prefix)


def check_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise BatchInvalid(f"list limit must be an int from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
    return limit


def check_expiry(expire_in: object, key: str) -> float | None:
    """Seconds from now, or None for never."""
    if expire_in is None:
        return None
    if (
        isinstance(expire_in, bool)
        or not isinstance(expire_in, (int, float))
        or not expire_in > 0
        or expire_in == float("inf")
    ):
        raise BatchInvalid(
            f"expire_in for store key {key!r} must be a positive number of seconds, "
            f"got {expire_in!r}"
        )
    return float(expire_in)


def check_increment(by: object, key: str) -> int:
    if isinstance(by, bool) or not isinstance(by, int) or abs(by) > MAX_SAFE_INTEGER:
        raise BatchInvalid(
            f"increment of store key {key!r}: 'by' must be an int within ±{MAX_SAFE_INTEGER}, "
            f"got {by!r}"
        )
    return by
