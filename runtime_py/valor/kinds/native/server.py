"""Server loader for ``type: "native"``: a C shared library, called through ctypes in a helper
process (``valor.kinds.native.child``), so a segfault or a hang never takes the host down.

A crash answers 502 and the next request starts a new process; a request past its timeout
kills the process (504). The plug-in's ``config`` reaches ``valor_init`` as JSON. See
``docs/kinds.md`` for the C ABI. CPython only; the browser cannot load native code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ..shared.process import PluginProcess, ProcessPlugin

CHILD = Path(__file__).with_name("child.py")


async def load_native(spec: PluginSpec) -> ProcessPlugin:
    path = Path(spec.path or "")
    if not path.is_file():
        raise PluginLoadError(spec.name, f"no shared library at {str(path)!r}")
    argv = [sys.executable, "-I", str(CHILD), str(path), json.dumps(spec.config)]
    process = PluginProcess(spec.name, argv, on_cancel="kill")
    await process.start()
    return ProcessPlugin(spec.name, process)
