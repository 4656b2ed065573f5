"""The browser host: the Valor runtime inside the Pyodide worker (``web/valor-worker.js``).

The worker's JavaScript only moves messages; everything else happens here, in the same
``Runtime`` the server runs. ``BROWSER_LOADERS`` lists the plug-in kinds the browser supports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from .loaders import Loader
from .loaders.python import load_python
from .manifest import load_manifest
from .runtime import Runtime
from .wire import RequestMessage, ResponseMessage

BROWSER_LOADERS: dict[str, Loader] = {"python": load_python}
"""``{kind: loader}`` for the browser; other kinds add their browser loaders here."""

try:
    from pyodide.ffi import JsBuffer
except ImportError:  # CPython: importable for tools and tests, unused there
    JsBuffer = bytes


class BrowserHost:
    """What the worker calls: ``handle`` for each request, ``prefixes`` to intercept."""

    def __init__(self, runtime: Runtime, failures: list[str]) -> None:
        self.runtime = runtime
        self.failures = failures

    @property
    def prefixes(self) -> list[str]:
        return self.runtime.intercept_prefixes

    def describe(self) -> dict[str, Any]:
        """The state the page shows: mounted plug-ins, load failures, prefixes."""
        return {
            "plugins": [spec.describe() for spec in self.runtime.plugins],
            "failures": self.failures,
            "prefixes": self.prefixes,
        }

    async def handle(self, url: str, method: str, headers: Any, body: Any) -> Any:
        """Answer one request from the worker: JS values in, a JS ``{status, reason, headers,
        body}`` out, the body a ``Uint8Array`` whose buffer the worker transfers."""
        message: RequestMessage = {
            "url": url,
            "method": method,
            "headers": headers.to_py(),
            "body": body.to_bytes() if isinstance(body, JsBuffer) else None,
        }
        response = await self.runtime.handle(message)
        return to_js_response(response)

    async def close(self) -> None:
        await self.runtime.close()


async def start(
    manifest_path: str,
    root_path: str = "",
    on_change: Callable[[Any], None] | None = None,
    registry: bool = True,
    access_log: bool = False,
) -> BrowserHost:
    """Load the manifest into a new runtime. ``on_change(prefixes)`` runs after mounts change.

    The registry needs no token here: it only ever holds files shipped in the bundle, and
    only this tab's runtime changes.
    """
    # Load and failure messages go to the console; one line per request would slow every call.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    logging.getLogger("valor.access").setLevel(logging.DEBUG if access_log else logging.WARNING)
    runtime = Runtime(BROWSER_LOADERS, root_path=root_path.rstrip("/"), registry=registry)
    failures = [str(exc) for exc in await runtime.load(load_manifest(manifest_path))]
    host = BrowserHost(runtime, failures)
    if on_change is not None:
        runtime.subscribe(lambda: on_change(_to_js(host.prefixes)))
    return host


async def install(urls: list[str]) -> None:
    """Install plug-in requirements from wheels in the bundle (never from an index)."""
    import micropip  # shipped in the bundle, loaded by the worker first

    await micropip.install(list(urls), deps=False)


def to_js_response(response: ResponseMessage) -> Any:
    from js import Object, Uint8Array  # Pyodide only

    body = response["body"]
    array = Uint8Array.new(len(body))
    if body:
        array.assign(body)
    answer = Object.new()
    answer.status = response["status"]
    answer.reason = _reason(response["status"])
    answer.headers = _to_js(response["headers"])
    answer.body = array
    return answer


def _to_js(value: Any) -> Any:
    from pyodide.ffi import to_js  # Pyodide only

    return to_js(value)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
