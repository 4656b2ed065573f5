"""The browser host's loaders for the js, wasm, wasi, proxy and native kinds (Pyodide only).

Logic stays in Python and is shared with the server: the kinds' own modules (``wasm``,
``wasi``, ``js``, ``proxy``) and limits (``wasm_limits``); the wasm and WASI engines are in
``browser_wasm``, the proxy's (``fetch``) is here. What runs in JavaScript is transport:
``kinds/pool.mjs`` and ``kinds/boot.mjs`` (the same worker pool Deno runs on the server) and
``kinds/wasm-executor.mjs``. URLs resolve against the runtime worker's own, i.e. the bundle's
base; plug-in files are at ``/valor/<path>`` in Pyodide's file system and at ``<base><path>``
on the site.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from typing import Any

from ..errors import PluginLoadError
from ..manifest import SERVER_ONLY_KINDS, PluginSpec
from ..wire import RequestMessage
from . import Loader
from .browser_ffi import field, js_bytes, js_message, js_object, plugin_url, site_url
from .browser_wasm import load_wasi, load_wasm
from .js import JsOptions, JsPlugin
from .js import load as load_js_with
from .proxy import Headers, ProxyPlugin, Unreachable
from .proxy import load as load_proxy_with

log = logging.getLogger("valor.plugins")
# The body a browser's fetch hands over is already decoded and re-framed.
BROWSER_DROPPED = {"content-encoding", "content-length"}


# -- js ---------------------------------------------------------------------------------------


class WorkerPoolEngine:
    """The plug-in's script in a pool of real dedicated workers, started from this worker."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._ids = itertools.count(1)

    async def answer(self, message: RequestMessage) -> tuple[dict[str, Any], bytes]:
        request_id = next(self._ids)
        body = message.get("body")
        request = js_object(
            {
                "url": message["url"],
                "method": message["method"],
                "headers": message["headers"],
                "body": js_bytes(body) if body else None,
            }
        )
        try:
            answer = await self._pool.answer(request_id, request)
        except asyncio.CancelledError:
            self._pool.cancel(request_id)  # terminates the worker stuck on it
            raise
        error = field(answer, "error")
        if error is not None:
            return {"error": str(error), "crashed": bool(field(answer, "crashed"))}, b""
        return {"status": answer.status, "headers": answer.headers.to_py()}, answer.body.to_bytes()

    async def close(self) -> None:
        self._pool.close()


async def load_js(spec: PluginSpec) -> JsPlugin:
    script = plugin_url(spec)

    async def start(spec: PluginSpec, options: JsOptions) -> WorkerPoolEngine:
        from pyodide.code import run_js

        pool_module = await run_js(f"import({json.dumps(site_url('kinds/pool.mjs'))})")
        make_worker = run_js(
            "(boot, script) => () => new Worker(boot, {type: 'module', name: script})"
        )(site_url("kinds/boot.mjs"), script)
        pool = pool_module.WorkerPool.new(make_worker, options.workers)
        try:
            await pool.start()
        except Exception as exc:  # a JsException: the script did not load
            pool.close()
            raise PluginLoadError(spec.name, js_message(exc)) from None
        return WorkerPoolEngine(pool)

    return await load_js_with(spec, start)


# -- proxy ------------------------------------------------------------------------------------


UPSTREAM_MARK = ("x-valor-upstream", "1")
"""Marks a proxy's request to a same-origin upstream, which the service worker leaves to the
network even under a mounted prefix: never back into Valor (or into the proxy itself)."""


class FetchEngine:
    """``fetch`` from the runtime worker. The service worker lets it through to the network
    (it only intercepts mounted prefixes of its own origin, and never a marked request); a
    cross-origin upstream must allow this site with CORS, as for any page. The runtime's
    timeout cancels it."""

    async def send(
        self, method: str, url: str, headers: Headers, body: bytes | None, max_body: int
    ) -> tuple[int, Headers, bytes]:
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


# -- native -----------------------------------------------------------------------------------


async def load_native(spec: PluginSpec) -> Any:
    raise PluginLoadError(
        spec.name,
        f"{SERVER_ONLY_KINDS['native']}; serve this one with the server host (valor serve), "
        "or build with --fallback URL to send its requests there",
    )


BROWSER_KIND_LOADERS: dict[str, Loader] = {
    "js": load_js,
    "wasm": load_wasm,
    "wasi": load_wasi,
    "proxy": load_proxy,
    "native": load_native,
}
