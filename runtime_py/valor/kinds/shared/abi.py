"""The binary message format shared by wasm and native plug-ins (and the process bridges),
as wire requests and responses. The buffer's codec is ``frames``: a 4-byte little-endian
length ``n``, then ``n`` bytes of a JSON head, then the raw body (the rest of the buffer)::

    request head:  {"method": "GET", "url": "http://host/path?q=1", "headers": [["a", "b"]]}
    response head: {"status": 200, "headers": [["content-type", "text/plain"]]}

JSON keeps the head easy to read from any language; the body stays raw so binary bodies cost
nothing. Pure Python: used by the server and the browser hosts alike.
"""

from __future__ import annotations

import json
from typing import Any

from ...wire import RequestMessage, ResponseMessage, WireError, header_pairs
from .frames import AbiError, pack_message, unpack_message


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
