"""Server loader for a Python plug-in with ``"isolation": "process"``: the plug-in runs in a
helper process (``valor.kinds.python.child``) spoken to with frames, like native plug-ins.

What in-process code cannot be stopped from (``os._exit()``, a C extension that crashes or
blocks, memory that keeps growing) then costs the helper, never the host: a crash answers 502
and the next request starts a new process; a request past its ``timeout`` kills the process
(504), since its code cannot be interrupted from outside; ``limits.memory_mb`` and
``limits.cpu_seconds`` bound it with ``setrlimit``. State kept in the module lives as long as
the process does. CPython on POSIX only.

Its store (``ctx.store``, a worker-style module's ``store``) is the plug-in's real one, reached
over the frames (``store_channel``): the same API, answers and errors as in the server's
process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import valor

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ...store.loading import store_being_loaded
from ...wire import RequestMessage, ResponseMessage
from ..shared.abi import encode_request
from ..shared.process import PluginProcess, ProcessPlugin, answer_of, helper_environment
from .store_channel import error_from, run_store_call

PACKAGE_ROOT = Path(valor.__file__).resolve().parent.parent


async def load_isolated_python(spec: PluginSpec) -> ProcessPlugin:
    path = Path(spec.path or "")
    if not path.is_file():
        raise PluginLoadError(spec.name, f"file not found: {path}")
    definition = {
        "name": spec.name,
        "path": str(path),
        "prefix": spec.prefix,
        "config": spec.config,
        "limits": spec.limits,
    }
    store = store_being_loaded()
    on_call = None
    if store is not None:
        definition["store"] = {"namespace": store.namespace, "description": store.description}

        async def on_call(head: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
            return await run_store_call(store, head, body)

    argv = [sys.executable, "-m", "valor.kinds.python.child", json.dumps(definition)]
    env = helper_environment(PYTHONPATH=str(PACKAGE_ROOT), PYTHONUNBUFFERED="1")
    process = PluginProcess(spec.name, argv, on_cancel="kill", env=env, on_call=on_call)
    await process.start()
    return IsolatedPlugin(spec.name, process)


class IsolatedPlugin(ProcessPlugin):
    """An isolated Python plug-in: a store error that escaped its code in the process is
    raised here again, so the runtime answers it as for any plug-in (503/507 naming the
    store)."""

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        head, body = await self.process.request(encode_request(message))
        if "store_error" in head:
            raise error_from(head["store_error"])
        return answer_of(self.name, head, body)
