"""Errors that Valor raises or that plug-ins raise to answer with an error status."""

from __future__ import annotations

from typing import Any

from .status import reason


class HTTPError(Exception):
    """Raise from a handler to answer ``status_code`` with a JSON error body naming
    ``detail``, as Starlette's ``HTTPException``."""

    def __init__(
        self,
        status_code: int | None = None,
        detail: Any = None,
        headers: dict[str, str] | None = None,
        *,
        status: int | None = None,
    ) -> None:
        status_code = pick_status_code(status_code, status, "HTTPError")
        if detail is None:
            detail = _phrase(status_code)
        super().__init__(status_code, detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = dict(headers or {})

    @property
    def status(self) -> int:
        """The old name of ``status_code``, kept working."""
        return self.status_code

    def __str__(self) -> str:
        return f"{self.status_code}: {self.detail}"


class ManifestError(ValueError):
    """A manifest or plug-in definition that is not valid. Names the plug-in and the field."""

    def __init__(self, message: str, plugin: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.field = field


# A plug-in that calls sys.exit() (SystemExit) while loading failed to load like any other;
# only a real interruption of the host (Ctrl-C, a cancelled start-up) passes through.
LOAD_FAILURES = (Exception, SystemExit, GeneratorExit)


class PluginLoadError(RuntimeError):
    """A plug-in whose definition is valid but whose code could not be loaded."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plug-in {plugin!r} failed to load: {message}")
        self.plugin = plugin
        self.reason = message


class PluginCrashed(RuntimeError):
    """A plug-in's process or worker died while answering (answered as 502)."""


def pick_status_code(status_code: int | None, status: int | None, owner: str) -> int:
    """``status_code``, or the old keyword ``status`` that means the same."""
    if status is None:
        if status_code is None:
            raise TypeError(f"{owner}() needs a status_code")
        return status_code
    if status_code is not None and status_code != status:
        raise TypeError(f"{owner}() got status_code={status_code} and status={status}: give one")
    return status


class BodyError(Exception):
    """A request body that could not be read: too large (413), too slow (408), cut short."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _phrase(status: int) -> str:
    return reason(status) or "Error"
