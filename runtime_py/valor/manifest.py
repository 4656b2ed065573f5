"""The manifest: which plug-ins to load, where to mount them, and with what config.

``{"store"?, "site"?, "plugins": [{"name", "type", "prefix"?, "path" | "url", "config"?, "timeout"?,
"requirements"?, "isolation"?, "limits"?, "app"?, "store"?, "outbound"?}]}``. Paths are relative
to the manifest's folder; ``app`` names the ASGI application in an ``asgi`` plug-in's module
(default ``app``), or a module and its application as uvicorn does (``readinglist.main:app``,
``path`` then left out: the module is found in the manifest's folder); ``outbound`` is
``{"allow": [host, ...]}``, where the plug-in may call out. The top-level ``store`` is the
server's store URL (docs/state.md), the top-level ``site`` the folder of the site's own pages that
``valor build`` puts beside the runtime; a plug-in's ``store`` names a namespace it shares with the
plug-ins that name the same (default: its name).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError
from .kinds import KINDS, Kind

HEALTH_PREFIX = "/_health"
REGISTRY_PREFIX = "/_plugins"
RESERVED_PREFIXES = (HEALTH_PREFIX, REGISTRY_PREFIX)
"""The built-ins' prefixes (``valor.builtins``), which no plug-in may take."""
DEFAULT_TIMEOUT = 30.0
ISOLATIONS = ("none", "process")
# What each ``limits`` key bounds; a missing key takes the host's default.
LIMITS = {
    "threads": "worker threads of a sync python, wasm or wasi plug-in (503 past them)",
    "response_bytes": "bytes of an upstream answer body: a proxy's (502 past it), or one a "
    "plug-in's calls out read (an error past it)",
    "memory_mb": "address space of an isolated python plug-in's process",
    "cpu_seconds": "CPU time of an isolated python plug-in's process",
}

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # fullmatch: "$" would let a "\n" end it
# Control characters (C0 and DEL): a prefix holding one could split a log line or a header.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KNOWN_FIELDS = {"name", "type", "prefix", "path", "url", "config", "timeout", "requirements"}
_KNOWN_FIELDS |= {"isolation", "limits", "app", "store", "outbound"}
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
_APP = re.compile(rf"^({_DOTTED}:)?{_DOTTED}$")
# An allowed host (fullmatch): a name or address, "*." before a name for its subdomains,
# ":port" after.
_ALLOWED_HOST = re.compile(
    r"(\*|(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
)


@dataclass(frozen=True)
class PluginSpec:
    """One plug-in definition, validated. ``path`` is resolved against the manifest's folder."""

    name: str
    type: str
    prefix: str
    path: Path | None = None
    url: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    requirements: tuple[str, ...] = ()
    source: dict[str, Any] = field(default_factory=dict)
    isolation: str = "none"
    limits: dict[str, int] = field(default_factory=dict)
    outbound: tuple[str, ...] | None = None
    """The hosts the plug-in may call out to (``outbound.allow``); None: any host."""
    store: str | None = None

    @property
    def namespace(self) -> str:
        """The store namespace the plug-in sees: the one it shares by name, else its own."""
        return self.store or self.name

    def describe(self) -> dict[str, Any]:
        """The definition as given (what ``GET /_plugins`` lists), with the effective prefix."""
        return {**self.source, "prefix": self.prefix}


@dataclass(frozen=True)
class Manifest:
    plugins: list[PluginSpec]
    base_dir: Path
    store: str | None = None
    site: Path | None = None
    """The folder of the site's own pages and files (``"site"``), which ``valor build`` bundles."""


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; raises ``ManifestError`` naming the plug-in and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {str(path)!r}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest {str(path)!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ManifestError(f"manifest {str(path)!r} is nested too deeply") from None
    return parse_manifest(data, path.resolve().parent)


def parse_manifest(data: Any, base_dir: Path) -> Manifest:
    """Validate a manifest already parsed from JSON. Every plug-in is checked before any loads."""
    if not isinstance(data, dict) or not isinstance(data.get("plugins"), list):
        raise ManifestError('a manifest must be an object with a "plugins" list')
    store = data.get("store")
    if store is not None and (not isinstance(store, str) or not store):
        raise ManifestError(
            'the manifest\'s "store" must be a store URL: memory:, sqlite:///PATH or '
            f"redis://HOST:PORT/DB, got {store!r}",
            None,
            "store",
        )
    site = data.get("site")
    if site is not None and (not isinstance(site, str) or not site or "\x00" in site):
        raise ManifestError(
            f'the manifest\'s "site" must be a folder relative to the manifest, got {site!r}',
            None,
            "site",
        )
    specs: list[PluginSpec] = []
    for index, entry in enumerate(data["plugins"]):
        spec = parse_plugin(entry, base_dir, where=f"plugins[{index}]")
        for other in specs:
            if other.name == spec.name:
                raise ManifestError(f"plug-in {spec.name!r}: name is used twice", spec.name, "name")
            if other.prefix == spec.prefix:
                raise ManifestError(
                    f"plug-in {spec.name!r}: prefix {spec.prefix!r} is already used by "
                    f"{other.name!r}",
                    spec.name,
                    "prefix",
                )
        specs.append(spec)
    folder = (base_dir / site).resolve() if site is not None else None
    return Manifest(plugins=specs, base_dir=base_dir, store=store, site=folder)


def parse_plugin(entry: Any, base_dir: Path, where: str = "plug-in") -> PluginSpec:
    """Validate one plug-in definition (a manifest entry, or a ``POST /_plugins`` body)."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: a plug-in definition must be an object")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ManifestError(
            f"{where}: 'name' must be a non-empty string of letters, digits, '-', '_' or '.'",
            None,
            "name",
        )

    def fail(field_name: str, problem: str) -> ManifestError:
        return ManifestError(f"plug-in {name!r}: {field_name!r} {problem}", name, field_name)

    unknown = sorted(set(entry) - _KNOWN_FIELDS)
    if unknown:
        raise fail(unknown[0], f"is not a known field (known: {', '.join(sorted(_KNOWN_FIELDS))})")
    type_name = entry.get("type")
    kind = KINDS.get(type_name) if isinstance(type_name, str) else None
    if kind is None:
        raise fail("type", f"must be one of {', '.join(KINDS)}, got {type_name!r}")
    prefix = _prefix(entry.get("prefix", "/" + name), fail)
    path, url = _location(entry, kind, base_dir, fail)

    config = entry.get("config", {})
    if not isinstance(config, dict):
        raise fail("config", "must be an object")
    timeout = entry.get("timeout", DEFAULT_TIMEOUT)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not math.isfinite(timeout)
        or timeout <= 0
    ):
        raise fail("timeout", f"must be a positive number of seconds, got {timeout!r}")
    requirements = entry.get("requirements", [])
    if not isinstance(requirements, list) or not all(isinstance(r, str) for r in requirements):
        raise fail("requirements", "must be a list of requirement strings")

    isolation = entry.get("isolation", "none")
    if isolation not in ISOLATIONS or (isolation != "none" and not kind.isolates):
        isolating = " or ".join(k.name for k in KINDS.values() if k.isolates)
        raise fail(
            "isolation",
            f"must be 'none', or 'process' for a {isolating} plug-in, got {isolation!r}",
        )
    limits = entry.get("limits", {})
    if not isinstance(limits, dict):
        raise fail("limits", "must be an object")
    for key, value in limits.items():
        if key not in LIMITS:
            raise fail("limits", f"has an unknown key {key!r} (known: {', '.join(LIMITS)})")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail("limits", f"{key!r} must be a positive integer, got {value!r}")

    store = entry.get("store")
    if store is not None and (not isinstance(store, str) or not _NAME.match(store)):
        raise fail(
            "store",
            f"must name a shared store namespace (letters, digits, '-', '_', '.'), got {store!r}",
        )
    outbound = _outbound(entry, fail)

    return PluginSpec(
        name=name,
        type=kind.name,
        prefix=prefix,
        path=path,
        url=url,
        config=config,
        timeout=float(timeout),
        requirements=tuple(requirements),
        source=dict(entry),
        isolation=isolation,
        limits=dict(limits),
        store=store,
        outbound=outbound,
    )


def _prefix(prefix: Any, fail: Callable[[str, str], ManifestError]) -> str:
    """The mount prefix, checked and normalised: one leading "/", no trailing one."""
    if not isinstance(prefix, str) or not prefix.startswith("/") or "?" in prefix or "#" in prefix:
        raise fail("prefix", f"must be a path starting with '/', got {prefix!r}")
    if _CONTROL.search(prefix):
        raise fail("prefix", f"must not hold control characters (CR, LF, tab...), got {prefix!r}")
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else "/"
    if any(prefix == r or prefix.startswith(r + "/") for r in RESERVED_PREFIXES):
        raise fail("prefix", f"{prefix!r} is reserved for Valor's built-ins")
    return prefix


def _location(
    entry: dict[str, Any], kind: Kind, base_dir: Path, fail: Callable[[str, str], ManifestError]
) -> tuple[Path | None, str | None]:
    """Where the plug-in is, as its kind takes it: a file (``path``, or the module an ``app``
    names) or an upstream ``url``."""
    app = entry.get("app", "app")
    if not kind.takes_app and "app" in entry:
        takers = " or ".join(repr(k.name) for k in KINDS.values() if k.takes_app)
        raise fail("app", f"is only for type {takers}")
    if not isinstance(app, str) or not _APP.match(app):
        raise fail(
            "app",
            "must name a module attribute, like 'app' or 'api.app', or a module's, like "
            f"'readinglist.main:app', got {app!r}",
        )
    module, colon, _ = app.rpartition(":")
    if colon and "path" not in entry:  # as uvicorn's readinglist.main:app
        path = _module_file(base_dir, module)
        if path is None:
            raise fail("app", f"names module {module!r}, which is not in {str(base_dir)!r}")
        return path, None
    if kind.takes_path:
        raw_path = entry.get("path")
        if not isinstance(raw_path, str) or not raw_path:
            raise fail(
                "path", f"is required for type {kind.name!r} (a file relative to the manifest)"
            )
        if "\x00" in raw_path:
            raise fail("path", "must not contain a NUL character")
        return (base_dir / raw_path).resolve(), None
    url = entry.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://[^/]+", url):
        raise fail("url", f"must be an http:// or https:// URL for type {kind.name!r}, got {url!r}")
    return None, url


def _outbound(entry: dict[str, Any], fail: Any) -> tuple[str, ...] | None:
    """``outbound.allow``, checked: the hosts a plug-in may call out to, or None for any."""
    if "outbound" not in entry:
        return None
    outbound = entry["outbound"]
    if not isinstance(outbound, dict) or set(outbound) != {"allow"}:
        raise fail("outbound", 'must be an object {"allow": [host, ...]}')
    allow = outbound["allow"]
    if not isinstance(allow, list) or not all(isinstance(h, str) for h in allow):
        raise fail("outbound", "'allow' must be a list of host names")
    for host in allow:
        if not _ALLOWED_HOST.fullmatch(host):
            raise fail(
                "outbound",
                f"'allow' has {host!r}, which is not a host like 'api.example.com', "
                "'*.example.org' or '127.0.0.1:8080'",
            )
    return tuple(host.lower() for host in allow)


def _module_file(base_dir: Path, module: str) -> Path | None:
    """The file of a dotted module below ``base_dir`` (a module or a package), if there."""
    target = base_dir.joinpath(*module.split("."))
    for candidate in (target.with_suffix(".py"), target / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None
