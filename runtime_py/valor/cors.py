"""Cross-origin access to the server host, for a browser bundle's ``--fallback``.

``valor serve --cors ORIGIN`` wraps the app in ``CorsMiddleware``: requests from an allowed
origin get ``access-control-allow-origin`` and every answer header exposed to the page, and
their preflights (``OPTIONS`` with ``access-control-request-method``) are answered here, before
any plug-in sees them. Requests from other origins pass through without CORS headers, so the
browser keeps their answers from the page. No credentials: the bundle's service worker sends
none.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
MAX_AGE = "600"  # seconds a browser may reuse a preflight's answer


class CorsMiddleware:
    """Allow ``origins`` (exact ``scheme://host[:port]``, or ``*`` for any) to call ``app``."""

    def __init__(self, app: Any, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = {origin.rstrip("/") for origin in origins}
        self.any = "*" in self.origins

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        origin = _header(scope, b"origin") if scope["type"] == "http" else None
        if origin is None or not (self.any or origin in self.origins):
            await self.app(scope, receive, send)
            return
        allowed = [(b"access-control-allow-origin", origin.encode("latin-1"))]
        requested = _header(scope, b"access-control-request-method")
        if scope["method"] == "OPTIONS" and requested is not None:
            headers = [
                *allowed,
                (b"vary", b"origin"),
                (b"access-control-allow-methods", requested.encode("latin-1")),
                (b"access-control-max-age", MAX_AGE.encode()),
                (b"content-length", b"0"),
            ]
            asked = _header(scope, b"access-control-request-headers")
            if asked:
                headers.append((b"access-control-allow-headers", asked.encode("latin-1")))
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": _with_cors(message["headers"], allowed)}
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _with_cors(headers: Any, allowed: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An answer's headers with this middleware's CORS headers in place of the app's own (an
    app with CORS of its own, an upstream API allowing ``*``): Chromium refuses an answer with
    two ``access-control-allow-origin`` values. ``origin`` joins the app's ``vary``, as
    Starlette's ``CORSMiddleware`` does."""
    kept = []
    vary = b""
    for name, value in headers:
        lower = name.lower()
        if lower == b"vary":
            vary = value if not vary else vary + b", " + value
        elif lower not in _OWN:
            kept.append((name, value))
    if b"origin" not in [token.strip().lower() for token in vary.split(b",")]:
        vary = vary + b", origin" if vary else b"origin"
    return [*kept, *allowed, (b"access-control-expose-headers", b"*"), (b"vary", vary)]


# The CORS headers of an answer that this middleware sets itself, for every allowed origin.
_OWN = frozenset([b"access-control-allow-origin", b"access-control-expose-headers"])


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
