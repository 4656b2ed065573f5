"""Python plug-ins, in both hosts: a module with ``@vlugin`` hooks, or a worker-style module
with ``onmessage(event)`` that answers through ``postMessage(message)``."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import traceback
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from pathlib import Path
from types import ModuleType
from typing import Any

from ...concurrency import DEFAULT_THREADS, HAS_THREADS, Threads, as_async, call
from ...errors import LOAD_FAILURES, HTTPError, PluginLoadError
from ...manifest import PluginSpec
from ...plugin import Context, is_handler
from ...requests import Request
from ...responses import error_message, to_message
from ...store import Store
from ...store.loading import store_being_loaded
from ...streaming import Stream
from ...wire import RequestMessage, ResponseMessage, WireError, body_bytes, response_message
from . import fresh

_reply: ContextVar[Any] = ContextVar("valor_reply")
_VALOR_DIR = str(Path(__file__).resolve().parents[2]) + "/"  # this is valor/kinds/python/


async def load_python(spec: PluginSpec) -> DecoratedPlugin | WorkerPlugin:
    """Import the plug-in's file and pick its style."""
    assert spec.path is not None
    if spec.isolation == "process" and HAS_THREADS:  # the browser has no processes to spare
        from .isolated import load_isolated_python

        return await load_isolated_python(spec)  # type: ignore[return-value]
    store = store_being_loaded()
    module = import_plugin_module(spec.name, spec.path, store=store)
    threads = Threads(spec.name, spec.limits.get("threads", DEFAULT_THREADS))
    if callable(getattr(module, "onmessage", None)):
        return WorkerPlugin(module, threads)
    handler = _handler(spec.name, module)
    on_create = getattr(module, "on_create", None)
    context = None
    if on_create is not None:
        context = Context(spec.name, spec.config, store)
        try:
            await call(on_create, context)
        except LOAD_FAILURES as exc:
            raise PluginLoadError(spec.name, f"on_create raised {describe_error(exc)}") from exc
    return DecoratedPlugin(module, handler, context, threads)


class DecoratedPlugin:
    """The ``@vlugin`` handler: ``handler(req)`` or, after ``on_create(ctx)``,
    ``handler(ctx, req)``."""

    def __init__(
        self,
        module: ModuleType,
        handler: Callable[..., Any],
        context: Context | None,
        threads: Threads | None = None,
    ) -> None:
        self.module = module
        self.context = context
        self.threads = threads
        self._on_request = as_async(handler, threads)

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        request = Request(message)
        args = (request,) if self.context is None else (self.context, request)
        try:
            result = await self._on_request(*args)
        except HTTPError as exc:
            answer = error_message(exc.status_code, exc.detail)
            answer["headers"].extend([k, v] for k, v in exc.headers.items())
            return answer
        answer = to_message(result)
        if isinstance(answer["body"], Stream):
            answer["body"].threads = self.threads  # a sync generator's steps: its own threads
        return answer

    async def close(self) -> None:
        if self.threads is not None:
            self.threads.close()


class MessageEvent:
    """What ``onmessage`` receives: ``event.data`` is the wire request."""

    def __init__(self, data: RequestMessage) -> None:
        self.data = data

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def postMessage(message: Any) -> None:
    """Answer the request being handled. Provided to worker-style modules as a global."""
    try:
        reply = _reply.get()
    except LookupError:
        raise RuntimeError("postMessage() was called outside of onmessage") from None
    reply(message)


class WorkerPlugin:
    """A worker-style module: ``onmessage(event)`` posts its answer with ``postMessage``."""

    def __init__(self, module: ModuleType, threads: Threads | None = None) -> None:
        self.module = module
        self.threads = threads
        self._onmessage = as_async(module.onmessage, threads)

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        parts = Parts()

        def settle(value: Any) -> None:
            if not answer.done():
                answer.set_result(value)
            else:
                parts.put(value)  # the next part of an answer posted with "more": True

        def reply(value: Any) -> None:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                settle(value)
            else:  # posted from the worker thread that runs a sync onmessage
                loop.call_soon_threadsafe(settle, value)

        token = _reply.set(reply)
        try:
            await self._onmessage(MessageEvent(message))
        finally:
            _reply.reset(token)
        # The answer may come later, from a task onmessage started; the runtime's timeout bounds it.
        value = await answer
        if isinstance(value, dict) and value.get("more"):
            return parts.answer(value)
        return response_message(value)

    async def close(self) -> None:
        if self.threads is not None:
            self.threads.close()


def _handler(name: str, module: ModuleType) -> Callable[..., Any]:
    """The module's one ``@vlugin`` request handler, whatever its name."""
    found = list(
        {id(value): value for value in vars(module).values() if is_handler(value)}.values()
    )
    if len(found) > 1:
        names = ", ".join(sorted(function.__name__ for function in found))
        raise PluginLoadError(name, f"@vlugin marks one request handler per module; found {names}")
    if found:
        return found[0]
    if callable(getattr(module, "on_request", None)):
        raise PluginLoadError(name, "on_request must be decorated with @vlugin")
    raise PluginLoadError(
        name, "the module defines neither an @vlugin request handler nor onmessage(event)"
    )


class Parts:
    """A worker-style answer in parts, as a worker posts them: the first message is the answer
    with ``"more": True``, each next one ``{"body": part, "more": True}``, the last one has
    ``"more"`` false or left out. Posting never waits, as ``postMessage`` does not: parts wait
    here, in memory, until the client takes them."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Any] | None = None

    def put(self, message: Any) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
        self._queue.put_nowait(message)

    def answer(self, head: dict[str, Any]) -> ResponseMessage:
        answer = response_message({**head, "body": None})
        answer["body"] = Stream(self._parts(body_bytes(head.get("body"))))  # type: ignore[typeddict-item]
        return answer

    async def _parts(self, first: bytes) -> AsyncIterator[bytes]:
        yield first
        if self._queue is None:
            self._queue = asyncio.Queue()
        while True:
            message = await self._queue.get()
            if not isinstance(message, dict):
                raise WireError(
                    f"a part must be a dict {{body, more}}, got {type(message).__name__}"
                )
            yield body_bytes(message.get("body"))
            if not message.get("more"):
                return


def import_plugin_module(
    name: str, path: Path, module_name: str | None = None, store: Store | None = None
) -> ModuleType:
    """Import a plug-in's file. A file in a package (its folder has an ``__init__.py``, or
    ``module_name`` names it, as ``readinglist.main``) imports as that package's module, with
    the folder above the package on ``sys.path``, so its relative imports work as under
    uvicorn; any other file imports on its own, with its folder on ``sys.path``, as a script
    does. A worker-style module's ``store`` is a global, as ``postMessage`` is. Failures name
    the file that failed, which may be a module the plug-in imports."""
    if not path.is_file():
        raise PluginLoadError(name, f"file not found: {path}")
    if module_name is None:
        module_name = package_module(path)
    if module_name is None:
        spec = importlib.util.spec_from_file_location(
            f"valor_plugin_{name.replace('.', '_')}", path
        )
        folder = path.parent
    else:
        depth = module_name.count(".") + (1 if path.name == "__init__.py" else 0)
        folder = path.parents[depth]
        spec = None
    # Modules beside the plug-in (or its package) import as they do beside a script.
    entry = str(folder.resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
    own = folder / module_name.partition(".")[0] if module_name is not None else path.parent
    fresh.forget_if_changed(own, package=module_name is not None)
    try:
        if module_name is not None:
            found = _import_package_module(name, path, module_name, folder, store)
            fresh.remember(own, package=True)
            return found
        if spec is None or spec.loader is None:
            raise PluginLoadError(name, f"cannot import {path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        module.postMessage = postMessage  # type: ignore[attr-defined]
        if store is not None:  # a worker-style module's store, a global as postMessage is
            module.store = store  # type: ignore[attr-defined]
        spec.loader.exec_module(module)
        fresh.remember(own, package=False)
    except PluginLoadError:
        raise
    except SyntaxError as exc:
        where = exc.filename or str(path)
        detail = f"syntax error in {where} line {exc.lineno}: {exc.msg}"
        raise PluginLoadError(name, detail) from exc
    except LOAD_FAILURES as exc:
        raise PluginLoadError(name, f"importing {path} raised {describe_error(exc)}") from exc
    return module


def package_module(path: Path) -> str | None:
    """The dotted name of a file inside a package (folders with ``__init__.py``), else None."""
    parts = [] if path.name == "__init__.py" else [path.stem]
    folder = path.parent
    while (folder / "__init__.py").is_file() and folder.name.isidentifier():
        parts.insert(0, folder.name)
        folder = folder.parent
    if not parts or (path.name != "__init__.py" and len(parts) == 1):
        return None
    return ".".join(parts)


def _import_package_module(
    name: str, path: Path, module_name: str, folder: Path, store: Store | None = None
) -> ModuleType:
    """``module_name`` imported from ``folder``, refusing a package of that name that is
    already imported from elsewhere (an installed one, another plug-in's)."""
    top = module_name.partition(".")[0]
    imported = sys.modules.get(top)
    if imported is not None:
        locations = [*getattr(imported, "__path__", []), getattr(imported, "__file__", None) or ""]
        if not any(Path(location).resolve().is_relative_to(folder.resolve())
                   for location in locations if location):  # fmt: skip
            where = locations[0] if locations else "a built-in module"
            raise PluginLoadError(
                name, f"cannot import {path} as {module_name!r}: {top!r} is already imported "
                f"from {where}; rename the package"
            )  # fmt: skip
    found = sys.modules.get(module_name)
    if found is None:
        found = importlib.import_module(module_name)
    if Path(getattr(found, "__file__", "") or "").resolve() != path.resolve():
        raise PluginLoadError(
            name, f"{module_name!r} imports from {found.__file__}, not from {path}"
        )  # fmt: skip
    if not hasattr(found, "postMessage"):
        found.postMessage = postMessage  # type: ignore[attr-defined]
    if store is not None and not hasattr(found, "store"):  # set after its import, here
        found.store = store  # type: ignore[attr-defined]
    return found


def describe_error(exc: BaseException) -> str:
    # Where the plug-in's own code raised, not Valor's (a rejected ``ctx.x = ...``) nor the
    # import system's (a module it imports that raised: that module's line).
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(_VALOR_DIR) and not frame.filename.startswith("<frozen")
    ]
    where = f" at {_short(frames[-1].filename)}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _short(filename: str) -> str:
    """A file's name, with its package's folder when it is in one (``readinglist/models.py``)."""
    path = Path(filename)
    if (path.parent / "__init__.py").is_file():
        return f"{path.parent.name}/{path.name}"
    return path.name
