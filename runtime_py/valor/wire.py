"""The wire format: the messages every part of Valor exchanges, in both hosts.

A request is ``{url, method, headers: [[name, value], ...], body: None | bytes}``.
A response is ``{status, headers: [[name, value], ...], body: bytes}``.
"""

from __future__ import annotations

import json
from typing import Any, TypedDict


class RequestMessage(TypedDict):
    url: str
    method: str
    headers: list[list[str]]
    body: bytes | None


class ResponseMessage(TypedDict):
    status: int
    headers: list[list[str]]
    body: bytes


class WireError(ValueError):
    """A message that does not follow the wire format."""


def response_message(message: Any) -> ResponseMessage:
    """Check a plug-in's answer and normalise it: status int, header pairs of str, body bytes."""
    if not isinstance(message, dict):
        raise WireError(f"a response must be a dict, got {type(message).__name__}")
    status = message.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise WireError(f"response 'status' must be an int from 100 to 599, got {status!r}")
    headers = message.get("headers") or []
    if type(headers) is list and all(
        type(pair) is list and len(pair) == 2 and type(pair[0]) is str and type(pair[1]) is str
        for pair in headers
    ):
        headers = list(headers)  # a copy: the runtime appends its own headers
    else:
        headers = header_pairs(headers, "response")
    body = message.get("body")
    return {
        "status": status,
        "headers": headers,
        "body": body if type(body) is bytes else body_bytes(body),
    }


def header_pairs(headers: Any, what: str) -> list[list[str]]:
    """Accept ``[[name, value], ...]`` (or a dict) and return a list of ``[str, str]`` pairs."""
    if isinstance(headers, dict):
        headers = list(headers.items())
    if not isinstance(headers, (list, tuple)):
        raise WireError(f"{what} 'headers' must be a list of [name, value] pairs")
    pairs = []
    for pair in headers:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise WireError(f"{what} 'headers' must be a list of [name, value] pairs, got {pair!r}")
        name, value = pair
        pairs.append([str(name), str(value)])
    return pairs


def body_bytes(body: Any) -> bytes:
    """A response body as bytes: bytes-like as is, str as UTF-8, JSON values encoded, None empty."""
    if body is None:
        return b""
    if isinstance(body, bytes):
        return body
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (dict, list)):
        return json.dumps(body).encode()
    raise WireError(f"response 'body' must be bytes, str or None, got {type(body).__name__}")
