"""Testing helpers for plug-in authors.

``TestClient`` answers requests in-process, like Starlette's; the pytest plug-in
(``valor.testing.pytest_plugin``, registered automatically) adds a ``valor_host`` fixture that runs
a test against the server host and against the browser host in Chromium.
"""

from .client import Response, TestClient

__all__ = ["Response", "TestClient"]
