"""What a proxy plug-in forwards and relays, in both hosts (pure Python)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

# Hop-by-hop headers (RFC 9110 section 7.6.1) and those the transport sets itself.
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def upstream_url(base: str, url: str) -> str:
    """The upstream URL for a request: ``base``'s origin and path, then the request's path
    (below the mount prefix) and query."""
    upstream, request = urlsplit(base), urlsplit(url)
    path = upstream.path.rstrip("/") + (request.path or "/")
    return urlunsplit((upstream.scheme, upstream.netloc, path, request.query, ""))


def forward_headers(headers: list[list[str]], url: str) -> list[tuple[str, str]]:
    """Request headers to send upstream, with ``x-forwarded-host`` / ``-proto`` added."""
    request = urlsplit(url)
    kept = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
    if request.netloc:
        kept.append(("x-forwarded-host", request.netloc))
        kept.append(("x-forwarded-proto", request.scheme))
    return kept


# Set by the runtime on every answer; an upstream Valor's own would be duplicates.
RUNTIME_SET = {"x-valor-plugin", "x-correlation-id"}


def relay_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    """Upstream answer headers to relay back."""
    dropped = HOP_BY_HOP | RUNTIME_SET
    return [[n, v] for n, v in headers if n.lower() not in dropped]
