"""The browser's engine for the js kind (Pyodide only): the plug-in's script in a pool of
dedicated Web Workers, ``scripts/pool.mjs`` and ``scripts/boot.mjs`` (the same pool Deno runs
on the server), started from the runtime worker. The kind itself is ``valor.kinds.js.core``.
URLs resolve against the runtime worker's own, i.e. the bundle's base.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ...wire import RequestMessage
from ..shared.browser_ffi import (
    field,
    js_bytes,
    js_message,
    js_object,
    plugin_url,
    require_workers,
    site_url,
)
from .core import JsOptions, JsPlugin
from .core import load as load_js_with


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

        require_workers(spec)
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
