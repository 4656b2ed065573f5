"""``Response``: what a test client answers, whichever host produced it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..headers import Headers
from ..wire import ResponseMessage


class Response:
    """One answer, whichever host gave it.

    ``status_code``, ``headers`` (case-insensitive), ``content``, ``text`` and ``json()``.
    """

    def __init__(self, status_code: int, headers: Iterable[Iterable[str]], content: bytes) -> None:
        self.status_code = status_code
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.content = content

    @classmethod
    def from_message(cls, message: ResponseMessage) -> Response:
        return cls(message["status"], message["headers"], message["body"])

    @property
    def text(self) -> str:
        """The body decoded with the content type's charset (UTF-8 if it names none)."""
        charset = "utf-8"
        for param in self.headers.get("content-type", "").split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "charset" and value:
                charset = value.strip('"')
        return self.content.decode(charset, errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"
