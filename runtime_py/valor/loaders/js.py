"""``type: "js"``: a Web Worker script run by real Workers; on the server inside Deno.

``js_workers`` (the pool's size) is shared with the browser host, which starts the same pool
in the runtime worker (``browser_kinds``); a worker's failure is mapped by
``failures.reported_failure`` in both.

One long-lived Deno process per plug-in (``js_host/deno_host.mjs``) holds a pool of workers
(``config.workers``, default 2), each started from ``js_host/boot.mjs``, which imports the
plug-in's file unchanged. Requests cross over stdin/stdout as frames (``valor.loaders.process``).
A worker that throws answers 502 and is replaced; a request past its timeout (504) terminates
its worker. ``fetch``, timers and ``crypto`` are Deno's own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import PluginLoadError
from ..manifest import PluginSpec
from .process import PluginProcess, ProcessPlugin

HOST_DIR = Path(__file__).with_name("js_host")


def js_workers(spec: PluginSpec) -> int:
    """``config.workers``: how many workers answer at once (1 to 64, default 2)."""
    workers = spec.config.get("workers", 2)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise PluginLoadError(spec.name, f"config 'workers' must be 1 to 64, got {workers!r}")
    return workers


def deno_binary() -> str | None:
    """The ``deno`` wheel's binary, else one on PATH. (The wheel guesses its scripts folder
    from the running interpreter, which is wrong in a venv that sees a system ``deno``.)"""
    try:
        import deno  # the server's engine only: not in the browser

        return deno.find_deno_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("deno")


def deno_command(script: Path, workers: int, binary: str) -> list[str]:
    """The Deno command line: reads only the plug-in's folder and Valor's host files."""
    return [
        binary,
        "run",
        "--quiet",
        "--no-prompt",
        "--no-config",
        "--no-lock",
        f"--allow-read={script.parent},{HOST_DIR}",
        "--allow-net",
        str(HOST_DIR / "deno_host.mjs"),
        script.as_uri(),
        str(workers),
    ]


async def load_js(spec: PluginSpec) -> ProcessPlugin:
    script = Path(spec.path or "")
    if not script.is_file():
        raise PluginLoadError(spec.name, f"no script at {str(script)!r}")
    workers = js_workers(spec)
    binary = deno_binary()
    if binary is None:
        raise PluginLoadError(spec.name, "js plug-ins need Deno: pip install deno")
    process = PluginProcess(spec.name, deno_command(script, workers, binary), on_cancel="message")
    await process.start()
    return ProcessPlugin(spec.name, process)
