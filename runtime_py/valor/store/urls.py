"""Which backend a store URL names: ``memory:``, ``sqlite:///path`` (or a plain path),
``redis://host:port/db``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .backend import Backend
from .errors import StoreError
from .memory import MemoryBackend

DEFAULT_SQLITE_FILE = "valor-store.sqlite3"
"""The server's store when none is chosen: this file beside the manifest."""


def open_backend(url: str, base_dir: Path) -> Backend:
    """The backend ``url`` names; a relative SQLite path is relative to ``base_dir``."""
    if url == "memory:":
        return MemoryBackend()
    if url.startswith(("redis://", "rediss://", "unix://")):
        from .redis import RedisBackend

        return RedisBackend(url)
    path = sqlite_path(url, base_dir)
    if path is None:
        raise StoreError(
            f"store URL {url!r} is not one of memory:, sqlite:///PATH (or a path), "
            "redis://HOST:PORT/DB"
        )
    from .sqlite import SqliteBackend  # not in Pyodide's build of the runtime's needs

    return SqliteBackend(path)


def sqlite_path(url: str, base_dir: Path) -> Path | None:
    """The SQLite file ``url`` names (a relative path is relative to ``base_dir``), or None
    when it names another backend."""
    if url.startswith("sqlite:"):
        # As SQLAlchemy writes them: sqlite:///relative/path, sqlite:////absolute/path.
        if not url.startswith("sqlite:///") or url == "sqlite:///":
            raise StoreError(f"store URL {url!r}: write sqlite:///PATH (three slashes)")
        return base_dir / url.removeprefix("sqlite:///")
    if url == "memory:" or "://" in url or not url:
        return None
    return base_dir / url


def default_url(base_dir: Path) -> str:
    return f"sqlite:///{(base_dir / DEFAULT_SQLITE_FILE).absolute().as_posix()}"


def redacted(url: str) -> str:
    """``url`` without its password, to name the store in errors and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
