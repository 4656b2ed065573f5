"""What a proxy plug-in forwards and relays, in both hosts (pure Python)."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_RESPONSE_BYTES = 32 * 1024 * 1024
"""The largest upstream answer body a proxy relays unless ``limits.response_bytes`` says."""

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


class UnsafePath(ValueError):
    """A request path that could reach the upstream outside the proxy's upstream path."""


def upstream_url(base: str, url: str) -> str:
    """The upstream URL for a request: ``base``'s origin and path, then the request's path
    (below the mount prefix, confined by ``confined_path``) and query."""
    upstream, request = urlsplit(base), urlsplit(url)
    path = upstream.path.rstrip("/") + confined_path(request.path or "/")
    return urlunsplit((upstream.scheme, upstream.netloc, path, request.query, ""))


def confined_path(path: str) -> str:
    """``path`` with its dot segments resolved (RFC 3986, 5.2.4), as the upstream would resolve
    them. ``UnsafePath`` if it climbs above ``/``, or if a segment hides a separator behind
    percent-encoding (``%2F``, ``%5C``), which an upstream that decodes first would split on:
    the proxy must not reach what its mount does not cover."""
    segments: list[str] = []
    raw_segments = path.split("/")[1:]
    for index, raw in enumerate(raw_segments):
        decoded = unquote(raw)
        if "/" in decoded or "\\" in decoded:
            raise UnsafePath(f"the path segment {raw!r} holds a '/' or '\\'")
        if decoded in (".", ".."):
            if decoded == ".." and not segments:
                raise UnsafePath(f"the path {path!r} climbs above the proxy's upstream path")
            if decoded == "..":
                segments.pop()
            if index == len(raw_segments) - 1:
                segments.append("")  # "/a/.." is the folder "/", not the file "/a"
            continue
        segments.append(raw)
    return "/" + "/".join(segments)


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
