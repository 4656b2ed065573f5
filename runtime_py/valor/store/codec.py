"""Values as backends keep them: one tag byte, then the value. ``j``: JSON text in UTF-8;
``b``: the bytes as they are. So ``bytes`` come back as ``bytes`` and everything else as
``json.loads`` reads it (a tuple comes back a list, as in JSON)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .errors import NotAnInteger, ValueNotStorable, ValueTooLarge
from .limits import MAX_SAFE_INTEGER, MAX_VALUE_BYTES

JSON_TAG = b"j"
BYTES_TAG = b"b"

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _one_encoder() -> Callable[[Any], str]:
    """``_encoder.encode``, without building its C encoder anew on every call (as much work
    as encoding a small value): built once here, with the same settings but for the check
    for cycles (a cycle is then a ``RecursionError``, which ``encode`` reports the same)."""
    try:
        make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
        scan = make(
            None,
            _encoder.default,
            json.encoder.encode_basestring,
            None,
            ":",
            ",",
            False,
            False,
            False,
        )
    except (AttributeError, TypeError):  # no C accelerator, or another signature
        return _encoder.encode
    return lambda value: "".join(scan(value, 0))


_dumps = _one_encoder()


def encode(value: Any, key: str) -> bytes:
    """``value`` encoded; ``ValueNotStorable`` or ``ValueTooLarge`` naming ``key``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        encoded = BYTES_TAG + bytes(value)
    else:
        try:
            encoded = JSON_TAG + _dumps(value).encode("utf-8")
        except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
            raise ValueNotStorable(
                f"the value for store key {key!r} is neither JSON-able nor bytes: {exc}"
            ) from None
    if len(encoded) > MAX_VALUE_BYTES:
        raise ValueTooLarge(
            f"the value for store key {key!r} is {len(encoded)} bytes encoded; "
            f"the limit is {MAX_VALUE_BYTES}"
        )
    return encoded


_scan = json.JSONDecoder().scan_once


def decode(encoded: bytes | memoryview) -> Any:
    """``encode``'s value back; ``encoded`` may be a view (the browser's store decodes from
    the buffer its reads are copied into, with no copy of its own first)."""
    tag, body = encoded[:1], encoded[1:]
    if tag == JSON_TAG:
        # ``encode``'s compact text, read by the parser's scanner at once: ``json.loads`` goes
        # through four Python-level calls first, a measurable share of a quick read (the
        # browser's store). Anything else (whitespace around it) takes the long way.
        text = str(body, "utf-8", "surrogatepass")
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            end = -1
        return value if end == len(text) else json.loads(text)
    if tag == BYTES_TAG:
        return bytes(body)
    raise ValueError(f"not a store value (tag {bytes(tag)!r})")


def encode_integer(number: int) -> bytes:
    return JSON_TAG + str(number).encode()


def incremented(encoded: bytes | None, by: int, key: str) -> tuple[bytes, int]:
    """The encoded value after adding ``by`` to ``encoded`` (absent counts as 0), and the sum.
    For backends that compute in Python; Redis's script does the same in Lua."""
    current = 0
    if encoded is not None:
        body = encoded[1:]
        digits = body[1:] if body[:1] == b"-" else body
        if encoded[:1] != JSON_TAG or not digits.isdigit():
            raise NotAnInteger(f"cannot increment store key {key!r}: its value is not an integer")
        current = int(body)
    total = current + by
    if abs(total) > MAX_SAFE_INTEGER:
        raise NotAnInteger(
            f"incrementing store key {key!r} by {by} leaves the safe integer range "
            f"(±{MAX_SAFE_INTEGER})"
        )
    return encode_integer(total), total
