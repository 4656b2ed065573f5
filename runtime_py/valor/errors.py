"""Errors that Valor raises or that plug-ins raise to answer with an error status."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any


class HTTPError(Exception):
    """Raise from a handler to answer ``status`` with a JSON error body naming ``detail``."""

    def __init__(
        self, status: int, detail: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        if detail is None:
            detail = _phrase(status)
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        return f"{self.status}: {self.detail}"


class ManifestError(ValueError):
    """A manifest or plug-in definition that is not valid. Names the plug-in and the field."""

    def __init__(self, message: str, plugin: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.field = field


class PluginLoadError(RuntimeError):
    """A plug-in whose definition is valid but whose code could not be loaded."""

    def __init__(self, plugin: str, message: str) -> None:
        super().__init__(f"plug-in {plugin!r} failed to load: {message}")
        self.plugin = plugin
        self.reason = message


class PluginCrashed(RuntimeError):
    """A plug-in's process or worker died while answering (answered as 502)."""


class BodyError(Exception):
    """A request body that could not be read: too large (413), too slow (408), cut short."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
