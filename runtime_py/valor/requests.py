"""``Request``: what a decorated handler receives."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from .errors import HTTPError
from .headers import Headers
from .wire import RequestMessage


class QueryParams(Mapping[str, str]):
    """Query parameters: an immutable, case-sensitive multi-dict in the order they came, like
    Starlette's. ``params["q"]`` is the first value, ``getlist("q")`` all of them."""

    __slots__ = ("_pairs",)

    def __init__(self, params: str | Iterable[Iterable[str]] | Mapping[str, str] = ()) -> None:
        if isinstance(params, str):
            params = parse_qsl(params, keep_blank_values=True)
        items = params.items() if isinstance(params, Mapping) else params
        self._pairs: list[tuple[str, str]] = [(str(k), str(v)) for k, v in items]

    def __getitem__(self, name: str) -> str:
        for key, value in self._pairs:
            if key == name:
                return value
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(key == name for key, _ in self._pairs)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key for key, _ in self._pairs))

    def __len__(self) -> int:
        return len(dict.fromkeys(key for key, _ in self._pairs))

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        return [value for key, value in self._pairs if key == name]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every pair, repeated names included, in order."""
        return list(self._pairs)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, QueryParams):
            return sorted(self._pairs) == sorted(other._pairs)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return urlencode(self._pairs)

    def __repr__(self) -> str:
        return f"QueryParams({str(self)!r})"


class Request:
    """An incoming request. ``path`` has the mount prefix stripped; ``url`` is the full URL."""

    def __init__(self, message: RequestMessage) -> None:
        self._message = message

    @property
    def method(self) -> str:
        return self._message["method"].upper()

    @cached_property
    def headers(self) -> Headers:
        return Headers(self._message["headers"])

    @property
    def url(self) -> str:
        """The URL as the plug-in sees it (prefix stripped), with the query string."""
        return self._message["url"]

    @cached_property
    def path(self) -> str:
        """The path below the prefix, percent-decoded (``url`` keeps it as sent)."""
        return unquote(urlsplit(self.url).path) or "/"

    @property
    def prefix(self) -> str:
        """The prefix the plug-in is mounted under (``x-forwarded-prefix``), or ``""``."""
        return self.headers.get("x-forwarded-prefix", "")

    @cached_property
    def query_params(self) -> QueryParams:
        return QueryParams(urlsplit(self.url).query)

    @property
    def body(self) -> bytes:
        return self._message["body"] or b""

    def text(self) -> str:
        """The body decoded as UTF-8 (a 400 if it is not)."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise HTTPError(400, "request body is not valid UTF-8") from None

    def json(self) -> Any:
        """The body parsed as JSON (a 400 naming the problem if it is not)."""
        if not self.body:
            raise HTTPError(400, "request body is empty; expected JSON")
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"request body is not valid JSON: {exc}") from None

    def __repr__(self) -> str:
        return f"Request({self.method} {self.url!r})"
