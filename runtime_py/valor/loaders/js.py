"""``type: "js"``: a Web Worker script run by real Workers; on the server inside Deno.

``js_workers`` (the pool's size) is shared with the browser host, which starts the same pool
in the runtime worker (``browser_kinds``); a worker's failure is mapped by
``failures.reported_failure`` in both.

One long-lived Deno process per plug-in (``js_host/deno_host.mjs``) holds a pool of workers
(``config.workers``, default 2), each started from ``js_host/boot.mjs``, which imports the
plug-in's file unchanged. Requests cross over stdin/stdout as frames (``valor.loaders.process``).
A worker that throws answers 502 and is replaced; a request past its timeout (504) terminates
its worker. ``fetch``, timers and ``crypto`` are Deno's own. ``config.max_memory_mb`` bounds
each worker's JavaScript heap; past it V8 ends the process (502) and the next request starts a
new one.
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
    max_memory_mb = spec.config.get("max_memory_mb")
    if max_memory_mb is not None and (
        isinstance(max_memory_mb, bool) or not isinstance(max_memory_mb, int) or max_memory_mb < 16
    ):
        raise PluginLoadError(
            spec.name,
            f"config 'max_memory_mb' must be an integer of 16 or more, got {max_memory_mb!r}",
        )
    binary = deno_binary()
    if binary is None:
        raise PluginLoadError(spec.name, "js plug-ins need Deno: pip install deno")
    command = deno_command(script, workers, binary, max_memory_mb)
    process = PluginProcess(spec.name, command, on_cancel="message")
    await process.start()
    return ProcessPlugin(spec.name, process)
