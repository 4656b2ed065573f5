"""Testing helpers for plug-in authors.

``TestClient`` is an ``httpx.Client`` that answers requests in-process, like Starlette's; the
pytest plug-in (``valor.testing.pytest_plugin``, registered automatically) adds a ``valor_host``
fixture that runs a test against the server host and against the browser host in Chromium.
Every client answers an ``httpx.Response``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from httpx import Response

    from .client import TestClient

__all__ = ["Response", "TestClient"]


def __getattr__(name: str) -> Any:
    # Imported on first use: pytest loads the plug-in module of this package in every run of
    # every project with Valor installed, and that must stay cheap (no httpx, no runtime).
    if name == "TestClient":
        from .client import TestClient

        return TestClient
    if name == "Response":
        from httpx import Response

        return Response
    raise AttributeError(f"module 'valor.testing' has no attribute {name!r}")
