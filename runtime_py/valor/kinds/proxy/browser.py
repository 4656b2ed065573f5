"""The browser's engine for the proxy kind (Pyodide only): ``fetch`` from the runtime worker.
The kind itself (options, path confinement, headers, the cap, failures) is
``valor.kinds.proxy.core``, shared with the server.
"""

from __future__ import annotations

import asyncio

from ...manifest import PluginSpec
from ..shared.browser_ffi import js_bytes, js_message, js_object
from .core import HeaderPairs, ProxyPlugin, Unreachable
from .core import load as load_proxy_with

# The body a browser's fetch hands over is already decoded and re-framed.
BROWSER_DROPPED = {"content-encoding", "content-length"}

UPSTREAM_MARK = ("x-valor-upstream", "1")
"""Marks a proxy's request to a same-origin upstream, which the service worker leaves to the
network even under a mounted prefix: never back into Valor (or into the proxy itself)."""


class FetchEngine:
    """``fetch`` from the runtime worker. The service worker lets it through to the network
    (it only intercepts mounted prefixes of its own origin, and never a marked request); a
    cross-origin upstream must allow this site with CORS, as for any page. The runtime's
    timeout cancels it."""

    async def send(
        self, method: str, url: str, headers: HeaderPairs, body: bytes | None, max_body: int
    ) -> tuple[int, HeaderPairs, bytes]:
        from js import AbortController, Array, fetch, location

        if url == location.origin or url.startswith(location.origin + "/"):
            headers = [*headers, UPSTREAM_MARK]
        controller = AbortController.new()
        init = {
            "method": method,
            "headers": [list(p) for p in headers],
            "signal": controller.signal,
        }
        if body and method not in ("GET", "HEAD"):
            init["body"] = js_bytes(body)
        try:
            response = await fetch(url, js_object(init))
            data = (await response.arrayBuffer()).to_bytes()
        except asyncio.CancelledError:
            controller.abort()
            raise
        except Exception as exc:  # a JsException: the network failed
            raise Unreachable(js_message(exc)) from None
        pairs = [(str(n), str(v)) for n, v in Array.from_(response.headers).to_py()]
        kept = [(n, v) for n, v in pairs if n.lower() not in BROWSER_DROPPED]
        return int(response.status), kept, data

    async def close(self) -> None:
        pass


async def load_proxy(spec: PluginSpec) -> ProxyPlugin:
    return await load_proxy_with(spec, FetchEngine())
