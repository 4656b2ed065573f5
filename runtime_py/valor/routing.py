"""Routing: the mount table, and how a request's URL reaches a plug-in (the longest mounted
prefix, matched on whole segments of the decoded path), as Starlette's ``Mount`` routes."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any
from urllib.parse import unquote

from .errors import ManifestError
from .kinds import Plugin
from .manifest import HEALTH_PREFIX, REGISTRY_PREFIX, PluginSpec


@dataclass(frozen=True)
class Mount:
    """A plug-in at its prefix, under the runtime's ``root_path``."""

    spec: PluginSpec
    plugin: Plugin
    root_path: str = ""
    # Made once here rather than for each request.
    forwarded_prefix: str = field(init=False, repr=False, compare=False)
    """Its requests' x-forwarded-prefix under no ASGI server's root path."""
    handle_forwarded: Any = field(init=False, repr=False, compare=False)
    """The plug-in's ``handle_forwarded`` (see ``valor.kinds``), or None."""

    def __post_init__(self) -> None:
        prefix = self.root_path + self.spec.prefix.rstrip("/")
        object.__setattr__(self, "forwarded_prefix", prefix)
        object.__setattr__(self, "handle_forwarded", getattr(self.plugin, "handle_forwarded", None))


class MountTable:
    """The plug-ins mounted, by name in the manifest's order, and those of the manifest that
    failed to load (their prefix answers 503), and the routes over both."""

    def __init__(self) -> None:
        self.mounts: dict[str, Mount] = {}
        self.unloaded: dict[str, Mount] = {}
        self.routes: list[Mount] = []  # longest prefix first
        self.by_prefix: dict[str, Mount] = {}

    def match(self, path: str) -> Mount | None:
        """The mount for a decoded path below the root path."""
        by_prefix = self.by_prefix
        # Walk up the path one segment at a time: the first mounted prefix is the longest.
        candidate = path
        while True:
            mount = by_prefix.get(candidate)
            if mount is not None or candidate == "/":
                return mount
            candidate = candidate[: candidate.rfind("/")] or "/"

    def rebuild(self) -> None:
        """Work out the routes again, after the mounts changed."""
        # A failed plug-in's prefix routes to its 503, unless a mounted plug-in took it.
        by_prefix = {mount.spec.prefix: mount for mount in self.mounts.values()}
        for mount in self.unloaded.values():
            by_prefix.setdefault(mount.spec.prefix, mount)
        self.routes = sorted(by_prefix.values(), key=lambda m: len(m.spec.prefix), reverse=True)
        self.by_prefix = {mount.spec.prefix: mount for mount in self.routes}

    def check_free(self, spec: PluginSpec) -> None:
        """``ManifestError`` if ``spec``'s name or prefix is taken."""
        if spec.name in self.mounts:
            raise ManifestError(
                f"a plug-in named {spec.name!r} is already mounted", spec.name, "name"
            )
        for mount in self.mounts.values():
            if mount.spec.prefix == spec.prefix:
                raise ManifestError(
                    f"prefix {spec.prefix!r} is already used by plug-in {mount.spec.name!r}",
                    spec.name,
                    "prefix",
                )

    def drop_unloaded(self, spec: PluginSpec) -> None:
        """A plug-in now mounted replaces a failed one of its name or at its prefix."""
        for name, failed in list(self.unloaded.items()):
            if name == spec.name or failed.spec.prefix == spec.prefix:
                del self.unloaded[name]


def split_url(url: str) -> tuple[str, str, str]:
    """``(origin, path, "?query")`` of an absolute URL or a bare path; the fragment dropped."""
    # Most URLs have neither fragment nor query: testing for one costs less than partition().
    if "#" in url:
        url = url.partition("#")[0]
    scheme_end = url.find("://")
    path_start = url.find("/", scheme_end + 3) if scheme_end >= 0 else 0
    if path_start < 0:
        path_start = len(url)
    origin, rest = url[:path_start], url[path_start:]
    if "?" not in rest:
        return origin, rest or "/", ""
    path, mark, query = rest.partition("?")
    return origin, path or "/", mark + query


def decoded(raw_path: str) -> str:
    """The path percent-decoded for routing, except ``%2F``: an encoded slash is part of a
    segment's name, never a separator (RFC 3986), so it cannot reach another mount."""
    if "%" not in raw_path:
        return raw_path
    return unquote(raw_path.replace("%2F", "%252F").replace("%2f", "%252f"))


def below(raw_path: str, path: str, prefix: str) -> str:
    """``raw_path`` without the segments of the mount ``prefix`` that matched ``path`` (its
    decoded form)."""
    if path is raw_path:  # nothing was decoded
        return (path[len(prefix) :] if prefix != "/" else path) or "/"
    end = 0
    for _ in range(prefix.count("/") if prefix != "/" else 0):
        end = raw_path.find("/", end + 1)
        if end < 0:
            return "/"
    return raw_path[end:] or "/"


def builtin_at(builtins: dict[str, Any], path: str) -> Any:
    """The built-in that answers a decoded path, or None. Built-ins are mounted under ``/_``
    (the manifest keeps plug-ins off their prefixes: the runtime looks for one only there);
    one answers at its prefix, and below it if it takes ``subpaths``."""
    builtin = builtins.get(path)
    if builtin is None:
        end = path.find("/", 1)
        if end > 0:
            builtin = builtins.get(path[:end])
            if builtin is not None and not builtin.subpaths:
                return None
    return builtin


def intercept_prefixes(root_path: str, prefixes: list[str], registry: bool) -> list[str]:
    """The built-ins' and ``prefixes`` under ``root_path``: what a service worker intercepts."""
    builtins = [HEALTH_PREFIX, *([REGISTRY_PREFIX] if registry else [])]
    return [root_path + p if p != "/" else root_path + "/" for p in [*builtins, *prefixes]]


def fetch_order(headers: Any, drop: str) -> list[list[str]]:
    """Request headers as ``fetch()`` hands them to a service worker: names in lower case,
    sorted, a repeated name's values joined by ``", "`` in order (``"; "`` for ``cookie``),
    without the header named ``drop``. RFC 9110 (5.3) lets a recipient combine them so; doing
    it in both hosts gives a plug-in the same list wherever it runs."""
    # Loops and set(map()) rather than comprehensions, each a function call of its own on
    # Python 3.11: a fifth of this function's time for a request's few headers.
    pairs = []
    for name, value in headers:
        pairs.append([name.lower(), value])
    pairs.sort(key=_first)
    names = set(map(_first, pairs))
    if drop in names:
        pairs = [pair for pair in pairs if pair[0] != drop]
        names.discard(drop)
    if len(names) == len(pairs):
        return pairs  # no name repeats, the usual case
    combined: list[list[str]] = []
    for pair in pairs:
        if combined and combined[-1][0] == pair[0]:
            separator = "; " if pair[0] == "cookie" else ", "
            combined[-1][1] = combined[-1][1] + separator + pair[1]
        else:
            combined.append(pair)
    # Joined values are trimmed, as Chromium trims them (two empty ones are ",").
    for pair in combined:
        pair[1] = pair[1].strip(" \t")
    return combined


_first = itemgetter(0)
"""A pair's name: as a sort key, itemgetter runs in C, a Python function would not."""
