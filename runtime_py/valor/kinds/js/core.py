"""``type: "js"``: a Web Worker script run by a pool of real Workers, the same in both hosts
(pure Python).

The pool (``scripts/pool.mjs``) holds ``config.workers`` workers (default 2), each started
from ``scripts/boot.mjs``, which imports the plug-in's file unchanged. A worker that throws
answers 502 and is replaced; a request past its timeout (504) terminates its worker.
``config.max_memory_mb`` bounds each worker's JavaScript heap where the engine can (Deno).

Everything but running the pool is here, once: the options, the checks of what a worker
answers (``process.answer_of``) and the failures. A host gives only its ``JsEngine``: a Deno
process on the server (``js.server``), dedicated Workers started from the runtime worker in
the browser (``js.browser``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ...wire import RequestMessage, ResponseMessage
from ..shared.process import answer_of


@dataclass(frozen=True)
class JsOptions:
    workers: int
    max_memory_mb: int | None


def js_options(spec: PluginSpec) -> JsOptions:
    """``config.workers``: how many workers answer at once (1 to 64, default 2);
    ``config.max_memory_mb``: each worker's heap (16 or more, default unbounded)."""
    workers = spec.config.get("workers", 2)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise PluginLoadError(spec.name, f"config 'workers' must be 1 to 64, got {workers!r}")
    max_memory_mb = spec.config.get("max_memory_mb")
    if max_memory_mb is not None and (
        isinstance(max_memory_mb, bool) or not isinstance(max_memory_mb, int) or max_memory_mb < 16
    ):
        raise PluginLoadError(
            spec.name,
            f"config 'max_memory_mb' must be an integer of 16 or more, got {max_memory_mb!r}",
        )
    return JsOptions(workers, max_memory_mb)


class JsEngine(Protocol):
    """A host's pool of workers running the plug-in's script."""

    async def answer(self, message: RequestMessage) -> tuple[dict[str, Any], bytes]:
        """A worker's answer: its head (``status`` and ``headers``, or ``error`` and
        ``crashed``) and its body. Cancelling it terminates the worker it runs on."""
        ...

    async def close(self) -> None: ...


EngineFactory = Callable[[PluginSpec, JsOptions], Awaitable[JsEngine]]


class JsPlugin:
    def __init__(self, spec: PluginSpec, engine: JsEngine) -> None:
        self.spec = spec
        self.engine = engine

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        head, body = await self.engine.answer(message)
        # The same checks and errors, word for word, whichever host's workers answered.
        return answer_of(self.spec.name, head, body)

    async def close(self) -> None:
        await self.engine.close()


async def load(spec: PluginSpec, start: EngineFactory) -> JsPlugin:
    """Check the options, then start the host's pool with ``start``."""
    return JsPlugin(spec, await start(spec, js_options(spec)))
