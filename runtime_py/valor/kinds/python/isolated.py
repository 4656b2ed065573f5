"""Server loader for a Python plug-in with ``"isolation": "process"``: the plug-in runs in a
helper process (``valor.kinds.python.child``) spoken to with frames, like native plug-ins.

What in-process code cannot be stopped from (``os._exit()``, a C extension that crashes or
blocks, memory that keeps growing) then costs the helper, never the host: a crash answers 502
and the next request starts a new process; a request past its ``timeout`` kills the process
(504), since its code cannot be interrupted from outside; ``limits.memory_mb`` and
``limits.cpu_seconds`` bound it with ``setrlimit``. State kept in the module lives as long as
the process does. CPython on POSIX only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import valor

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ..shared.process import PluginProcess, ProcessPlugin, helper_environment

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
    argv = [sys.executable, "-m", "valor.kinds.python.child", json.dumps(definition)]
    env = helper_environment(PYTHONPATH=str(PACKAGE_ROOT), PYTHONUNBUFFERED="1")
    process = PluginProcess(spec.name, argv, on_cancel="kill", env=env)
    await process.start()
    return ProcessPlugin(spec.name, process)
