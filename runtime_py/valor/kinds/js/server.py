"""The server's engine for the js kind (CPython only): one long-lived Deno process per plug-in
(``scripts/deno_host.mjs``) holding the worker pool. Requests cross over stdin/stdout as frames
(``valor.kinds.shared.process``). ``fetch``, timers and ``crypto`` are Deno's own. Past
``max_memory_mb`` V8 ends the process (502) and the next request starts a new one. The kind
itself (options, answer checks, failures) is ``valor.kinds.js.core``, shared with the browser."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ...wire import RequestMessage
from ..shared.abi import encode_request
from ..shared.process import PluginProcess
from .core import JsOptions, JsPlugin, load

# The JS the Deno process runs (and nothing else of the package: it is all Deno may read).
SCRIPTS_DIR = Path(__file__).with_name("scripts")


def deno_binary() -> str | None:
    """The ``deno`` wheel's binary, else one on PATH. (The wheel guesses its scripts folder
    from the running interpreter, which is wrong in a venv that sees a system ``deno``.)"""
    try:
        import deno

        return deno.find_deno_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("deno")


# V8 grows each isolate's young generation up to 2 x 16 MiB under steady load (and its old
# generation lazily), so a busy Deno process with 3 isolates rose by ~60 MiB before levelling
# off. Smaller semi-spaces cost more minor collections, which were not measurable here.
SEMI_SPACE_MB = 2


def deno_command(
    script: Path, workers: int, binary: str, max_memory_mb: int | None = None
) -> list[str]:
    """The Deno command line: reads only the plug-in's folder and Valor's host files; V8's
    heaps bounded (``max_memory_mb``: each isolate's old generation)."""
    v8_flags = f"--max-semi-space-size={SEMI_SPACE_MB}"
    if max_memory_mb is not None:
        v8_flags += f",--max-old-space-size={max_memory_mb}"
    return [
        binary,
        "run",
        "--quiet",
        "--no-prompt",
        "--no-config",
        "--no-lock",
        f"--v8-flags={v8_flags}",
        f"--allow-read={script.parent},{SCRIPTS_DIR}",
        "--allow-net",
        str(SCRIPTS_DIR / "deno_host.mjs"),
        script.as_uri(),
        str(workers),
    ]


class DenoEngine:
    def __init__(self, process: PluginProcess) -> None:
        self.process = process

    async def answer(self, message: RequestMessage) -> tuple[dict[str, Any], bytes]:
        return await self.process.request(encode_request(message))

    async def close(self) -> None:
        await self.process.close()


async def load_js(spec: PluginSpec) -> JsPlugin:
    script = Path(spec.path or "")
    if not script.is_file():
        raise PluginLoadError(spec.name, f"no script at {str(script)!r}")

    async def start(spec: PluginSpec, options: JsOptions) -> DenoEngine:
        binary = deno_binary()
        if binary is None:
            raise PluginLoadError(spec.name, "js plug-ins need Deno: pip install deno")
        command = deno_command(script, options.workers, binary, options.max_memory_mb)
        process = PluginProcess(spec.name, command, on_cancel="message")
        await process.start()
        return DenoEngine(process)

    return await load(spec, start)
