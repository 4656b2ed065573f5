"""``Response`` and the rules that turn whatever a handler returns into a wire response."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import pick_status_code
from .status import reason
from .streaming import Stream, is_streamable, stream_of
from .wire import ResponseMessage

TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
BINARY = "application/octet-stream"


class Response:
    """A response with an explicit status, headers and media type.

    ``content`` may be an iterator or async iterator of ``bytes`` or ``str``: the answer is then
    streamed, each part sent as it comes (``valor.streaming``).
    """

    def __init__(
        self,
        content: Any = None,
        status_code: int | None = None,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        media_type: str | None = None,
        *,
        status: int | None = None,
    ) -> None:
        if status_code is None and status is None:
            status_code = 200
        self.status_code = pick_status_code(status_code, status, "Response")
        body, default_type = _encode(content)
        self.body = body
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        self.headers: list[list[str]] = [[str(k), str(v)] for k, v in pairs]
        media_type = media_type or default_type
        if media_type and not any(k.lower() == "content-type" for k, _ in self.headers):
            self.headers.append(["content-type", media_type])

    @property
    def status(self) -> int:
        """The old name of ``status_code``, kept working."""
        return self.status_code

    def message(self) -> ResponseMessage:
        return {"status": self.status_code, "headers": self.headers, "body": self.body}

    def __repr__(self) -> str:
        body = self.body if isinstance(self.body, Stream) else self.body[:40]
        return f"Response(status_code={self.status_code}, body={body!r})"


class StreamingResponse(Response):
    """A streamed answer, as Starlette users know it: ``content`` is an iterator or async
    iterator of ``bytes`` or ``str``, sent part by part."""

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        media_type: str | None = None,
    ) -> None:
        if not is_streamable(content):
            kind = type(content).__name__
            raise TypeError(f"StreamingResponse needs an iterator or async iterator, got {kind}")
        super().__init__(content, status_code, headers, media_type)


def to_message(result: Any) -> ResponseMessage:
    """Normalise a handler's result.

    ``Response``; ``str`` (text); ``bytes``; ``dict``/``list`` (JSON); ``None`` (204);
    ``(body, status)`` or ``(body, status, headers)``.
    """
    if type(result) is str:  # the common case, without building a Response
        return {"status": 200, "headers": [["content-type", TEXT]], "body": result.encode()}
    if isinstance(result, Response):
        return result.message()
    if isinstance(result, tuple):
        if len(result) not in (2, 3) or not isinstance(result[1], int):
            raise TypeError(
                "a handler tuple must be (body, status) or (body, status, headers), "
                f"got {result!r:.80}"
            )
        headers = result[2] if len(result) == 3 else None
        return Response(result[0], result[1], headers).message()
    if result is None:
        return {"status": 204, "headers": [], "body": b""}
    return Response(result).message()


def error_message(status: int, detail: Any, **extra: Any) -> ResponseMessage:
    """The JSON error body every failure answers with: ``{"status", "error", "detail"}``."""
    body = {"status": status, "error": reason(status) or "Error", "detail": detail, **extra}
    return {
        "status": status,
        "headers": [["content-type", JSON]],
        "body": json.dumps(body).encode(),
    }


def _encode(content: Any) -> tuple[Any, str | None]:
    if content is None:
        return b"", None
    if isinstance(content, str):
        return content.encode("utf-8"), TEXT
    if isinstance(content, (bytes, bytearray, memoryview)):
        return bytes(content), BINARY
    if isinstance(content, (dict, list)):
        return json.dumps(content).encode("utf-8"), JSON
    if is_streamable(content):
        return stream_of(content), None
    raise TypeError(
        f"cannot answer with a {type(content).__name__}: return str, bytes, dict, list, None, "
        "an iterator of parts to stream, or a Response"
    )
