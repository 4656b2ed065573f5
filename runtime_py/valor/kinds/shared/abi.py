"""The binary message format shared by wasm and native plug-ins (and the process bridges).

A message is one buffer: a 4-byte little-endian length ``n``, then ``n`` bytes of a JSON head,
then the raw body (the rest of the buffer)::

    request head:  {"method": "GET", "url": "http://host/path?q=1", "headers": [["a", "b"]]}
    response head: {"status": 200, "headers": [["content-type", "text/plain"]]}

JSON keeps the head easy to read from any language; the body stays raw so binary bodies cost
nothing. Pure Python: used by the server and the browser hosts alike.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from ..wire import RequestMessage, ResponseMessage, WireError, header_pairs

_LEN = struct.Struct("<I")


class AbiError(ValueError):
    """A buffer from a plug-in that does not follow the message format."""


def encode_request(message: RequestMessage) -> bytes:
    """A wire request as one ABI buffer."""
    head = {"method": message["method"], "url": message["url"], "headers": message["headers"]}
    return pack_message(head, message.get("body") or b"")


def encode_config(config: dict[str, Any]) -> bytes:
    """A plug-in's manifest ``config`` as ``valor_init`` receives it (wasm and native): JSON."""
    return json.dumps(config, separators=(",", ":")).encode()


def decode_response(buffer: bytes) -> ResponseMessage:
    """A plug-in's ABI buffer as a checked wire response; ``AbiError`` says what is wrong."""
    return response_from(*unpack_message(buffer))


def response_from(head: dict[str, Any], body: bytes) -> ResponseMessage:
    """A response head and body as a checked wire response."""
    status = head.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise AbiError(f"response 'status' must be an int from 100 to 599, got {status!r}")
    try:
        headers = header_pairs(head.get("headers") or [], "response")
    except WireError as exc:
        raise AbiError(str(exc)) from None
    return {"status": status, "headers": headers, "body": body}


def unpack_pointer(packed: int) -> tuple[int, int]:
    """The ``(ptr, len)`` in a packed i64 (wasm returns it signed, so mask it first)."""
    packed &= 0xFFFF_FFFF_FFFF_FFFF
    return packed >> 32, packed & 0xFFFF_FFFF


def pack_message(head: dict[str, Any], body: bytes) -> bytes:
    """A head and a body as one buffer."""
    raw = json.dumps(head, separators=(",", ":")).encode()
    return b"".join((_LEN.pack(len(raw)), raw, body))


def unpack_message(buffer: bytes) -> tuple[dict[str, Any], bytes]:
    """A buffer's head and body; ``AbiError`` says what is wrong."""
    if len(buffer) < _LEN.size:
        raise AbiError(f"a message needs at least 4 bytes (the head length), got {len(buffer)}")
    (size,) = _LEN.unpack_from(buffer)
    if size > len(buffer) - _LEN.size:
        raise AbiError(f"head length {size} is past the end of the {len(buffer)}-byte message")
    try:
        head = json.loads(buffer[_LEN.size : _LEN.size + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AbiError(f"the message head is not valid JSON: {exc}") from None
    if not isinstance(head, dict):
        raise AbiError("the message head must be a JSON object")
    return head, bytes(buffer[_LEN.size + size :])
