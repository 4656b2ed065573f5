"""The wire format: the messages every part of Valor exchanges, in both hosts.

A request is ``{url, method, headers: [[name, value], ...], body: None | bytes}``.
A response is ``{status, headers: [[name, value], ...], body: bytes}``.
"""

from __future__ import annotations

import json
import re
from typing import Any, NotRequired, TypedDict


class RequestMessage(TypedDict):
    url: str
    method: str
    headers: list[list[str]]
    body: bytes | None
    # What a host knows of the exchange beyond the request, for the runtime only (a plug-in's
    # message never has them): the ASGI server's root path and the client's address.
    root_path: NotRequired[str]
    client: NotRequired[tuple[str, int] | None]


class ResponseMessage(TypedDict):
    status: int
    headers: list[list[str]]
    body: bytes


class WireError(ValueError):
    """A message that does not follow the wire format."""


def response_message(message: Any) -> ResponseMessage:
    """Check a plug-in's answer and normalise it: status int, header pairs of str, body bytes."""
    if type(message) is dict:
        # Most answers are already in shape: check them without building anything new.
        status, headers, body = (
            message.get("status", 200),
            message.get("headers"),
            message.get("body"),
        )
        if (
            type(status) is int
            and 100 <= status <= 599
            and type(body) is bytes
            and type(headers) is list
            and _is_pair_list(headers)
        ):
            return {"status": status, "headers": headers.copy(), "body": body}
    elif not isinstance(message, dict):
        raise WireError(f"a response must be a dict, got {type(message).__name__}")
    status = message.get("status", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise WireError(f"response 'status' must be an int from 100 to 599, got {status!r}")
    return {
        "status": status,
        "headers": header_pairs(message.get("headers") or [], "response"),
        "body": body_bytes(message.get("body")),
    }


# What HTTP/1.1 and fetch() both carry unchanged: a final status, token header names, and
# values of visible ASCII, spaces and tabs (RFC 9110, 5.1 and 5.5). Latin-1 past ASCII is
# obsolete in HTTP, and a service worker's answer turns it into UTF-8: not the same bytes.
NO_BODY = frozenset({204, 205, 304})
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TRIMMED_VALUE = re.compile(r"(?:[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?)?")
_VALUE = re.compile(r"[\t\x20-\x7e]*")
# Names seen valid and not dropped: most answers use a few, checked once each. Bounded, so a
# plug-in that invents names cannot grow it without end.
_kept_names: set[str] = set()
_KEPT_NAMES_MAX = 1024
# Short values seen valid and trimmed (a content type, a cache policy): looking one up costs a
# tenth of the regular expression. Bounded as the names are; long values are seldom repeated.
_kept_values: set[str] = set()
_KEPT_VALUES_MAX = 1024
_KEPT_VALUE_SIZE = 64


def http_answer(answer: ResponseMessage, drop: frozenset[str] = frozenset()) -> ResponseMessage:
    """Check that an answer is valid HTTP, so both hosts send it alike or neither does: a
    status from 200 to 599, no body with 204, 205 or 304, header names that are tokens and
    values of visible ASCII, spaces and tabs. Spaces and tabs at either end of a value are
    dropped, as ``fetch()`` drops them, and so are headers named in ``drop`` (lower case).
    Raises ``WireError`` naming the problem."""
    status = answer["status"]
    if not 200 <= status <= 599:
        raise WireError(f"status {status} is not a final HTTP status (200 to 599)")
    if answer["body"] and status in NO_BODY:
        raise WireError(f"a {status} answer cannot have a body ({len(answer['body'])} bytes)")
    headers = answer["headers"]
    dropped = False
    for index, (name, value) in enumerate(headers):
        if name not in _kept_names:
            if not _TOKEN.fullmatch(name):
                raise WireError(f"header name {name!r} is not a valid HTTP field name")
            if name.lower() in drop:
                dropped = True
            elif len(_kept_names) < _KEPT_NAMES_MAX:
                _kept_names.add(name)
        if value in _kept_values:
            continue
        if not _TRIMMED_VALUE.fullmatch(value):
            if not _VALUE.fullmatch(value):
                raise WireError(f"header {name!r} has a value HTTP cannot carry: {value!r:.80}")
            headers[index] = [name, value.strip(" \t")]
        elif len(value) <= _KEPT_VALUE_SIZE and len(_kept_values) < _KEPT_VALUES_MAX:
            _kept_values.add(value)
    if dropped:
        answer["headers"] = [pair for pair in headers if pair[0].lower() not in drop]
    return answer


def checked_answer(message: Any, drop: frozenset[str] = frozenset()) -> ResponseMessage:
    """``http_answer(response_message(message), drop)``: a plug-in's answer normalised and
    checked, its headers a new list. The usual answer, whose header names and values are all
    known valid and kept (seen before, under the same ``drop``), is checked in one pass."""
    if type(message) is dict:
        status, headers, body = (
            message.get("status", 200),
            message.get("headers"),
            message.get("body"),
        )
        if (
            type(status) is int
            and 200 <= status <= 599
            and type(body) is bytes
            and type(headers) is list
            and not (body and status in NO_BODY)
        ):
            kept = []
            try:
                for pair in headers:
                    if type(pair) is not list or len(pair) != 2:
                        break
                    # The sets hold str only: whatever else a pair holds is not in them.
                    if pair[0] not in _kept_names or pair[1] not in _kept_values:
                        break
                    kept.append(pair)
                else:
                    return {"status": status, "headers": kept, "body": body}
            except TypeError:  # an unhashable name or value: the checks below say so
                pass
    return http_answer(response_message(message), drop)


# The same for an ASGI app's answer, as it sends it (bytes): names seen valid and in lower case
# (by the names dropped: True, kept), short values seen valid and trimmed. Bounded as above.
_raw_names: dict[frozenset[str], dict[bytes, bool]] = {}
_raw_values: set[bytes] = set()


def plain_asgi_headers(
    headers: Any, drop: frozenset[str] = frozenset()
) -> list[tuple[bytes, bytes]] | None:
    """An ASGI answer's headers, without those named in ``drop``, when each is as
    ``http_answer`` keeps it unchanged: a token name in lower case and a value with nothing to
    trim. None otherwise (``http_answer`` then says what is wrong, or trims). Known names and
    short values are looked up, not checked again."""
    names = _raw_names.get(drop)
    if names is None:
        names = _raw_names[drop] = {}
    kept = []
    try:
        for name, value in headers:
            try:  # a subscript, not get(): no method call for a name seen before
                keep = names[name]
            except KeyError:
                if type(name) is not bytes:
                    return None
                text = name.decode("latin-1")
                if not _TOKEN.fullmatch(text) or text.lower() != text:
                    return None
                keep = text not in drop
                if len(names) < _KEPT_NAMES_MAX:
                    names[name] = keep
            if value not in _raw_values:
                if type(value) is not bytes:
                    return None
                if not _TRIMMED_VALUE.fullmatch(value.decode("latin-1")):
                    return None
                if len(value) <= _KEPT_VALUE_SIZE and len(_raw_values) < _KEPT_VALUES_MAX:
                    _raw_values.add(value)
            if keep:
                kept.append((name, value))
    except (TypeError, ValueError):  # not pairs, or not hashable: http_answer says what
        return None
    return kept


def _is_pair_list(headers: list[Any]) -> bool:
    for pair in headers:
        if type(pair) is not list or len(pair) != 2:
            return False
        if type(pair[0]) is not str or type(pair[1]) is not str:
            return False
    return True


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
