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
    return _pack(head, message.get("body") or b"")


def decode_request(buffer: bytes) -> RequestMessage:
    """An ABI buffer back into a wire request (what a plug-in side written in Python reads)."""
    head, body = _unpack(buffer)
    try:
        headers = header_pairs(head.get("headers") or [], "request")
    except WireError as exc:
        raise AbiError(str(exc)) from None
    method, url = head.get("method"), head.get("url")
    if not isinstance(method, str) or not isinstance(url, str):
        raise AbiError("a request head needs string 'method' and 'url'")
    return {"method": method, "url": url, "headers": headers, "body": body or None}


def encode_response(message: ResponseMessage) -> bytes:
    """A wire response as one ABI buffer."""
    head = {"status": message["status"], "headers": message["headers"]}
    return _pack(head, message.get("body") or b"")


def decode_response(buffer: bytes) -> ResponseMessage:
    """A plug-in's ABI buffer as a checked wire response; ``AbiError`` says what is wrong."""
    head, body = _unpack(buffer)
    status = head.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise AbiError(f"response 'status' must be an int from 100 to 599, got {status!r}")
    try:
        headers = header_pairs(head.get("headers") or [], "response")
    except WireError as exc:
        raise AbiError(str(exc)) from None
    return {"status": status, "headers": headers, "body": body}


def pack_pointer(ptr: int, length: int) -> int:
    """``(ptr << 32) | len``: how a wasm ``handle`` returns its answer in one i64."""
    return (ptr << 32) | length


def unpack_pointer(packed: int) -> tuple[int, int]:
    """The ``(ptr, len)`` in a packed i64 (wasm returns it signed, so mask it first)."""
    packed &= 0xFFFF_FFFF_FFFF_FFFF
    return packed >> 32, packed & 0xFFFF_FFFF


def _pack(head: dict[str, Any], body: bytes) -> bytes:
    raw = json.dumps(head, separators=(",", ":")).encode()
    return b"".join((_LEN.pack(len(raw)), raw, body))


def _unpack(buffer: bytes) -> tuple[dict[str, Any], bytes]:
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
