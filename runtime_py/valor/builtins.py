"""The runtime's built-in plug-ins, mounted by the runtime itself as the original Valor's
``with_health`` and ``with_registry`` mount them: ``/_health``, and the ``/_plugins``
registry, which mounts and unmounts plug-ins while the host runs."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import BodyError, ManifestError, PluginLoadError
from .failures import registry_store_failure
from .headers import first_value
from .manifest import HEALTH_PREFIX, REGISTRY_PREFIX, parse_plugin
from .registry import SharedRegistry
from .responses import JSON, error_message
from .store import MemoryBackend, StoreError
from .wire import RequestMessage, ResponseMessage

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .runtime import Runtime

    BodyReader = Callable[[], Awaitable["bytes | None"]]

log = logging.getLogger("valor")


class Builtin(Protocol):
    """A plug-in of the runtime's own: answers every request under its prefix, once the
    manifest has loaded, with the request's body read only if it wants it."""

    prefix: str
    subpaths: bool  # whether it answers below its prefix too, or at the prefix only

    async def answer(
        self, message: RequestMessage, path: str, read_body: BodyReader | None
    ) -> ResponseMessage: ...


async def receive(message: RequestMessage, read_body: BodyReader | None) -> ResponseMessage | None:
    """Read the body now, if the host left it to the runtime; the error answer if that failed."""
    if read_body is None:
        return None
    try:
        message["body"] = await read_body()
    except BodyError as exc:
        return error_message(exc.status, exc.detail)
    return None


class Health:
    """``/_health``: the host answers; how many plug-ins are mounted, and which failed."""

    prefix = HEALTH_PREFIX
    subpaths = False

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def answer(
        self, message: RequestMessage, path: str, read_body: BodyReader | None
    ) -> ResponseMessage:
        runtime = self.runtime
        table = runtime.table
        failed = [
            {"name": mount.spec.name, "prefix": mount.spec.prefix, "error": str(failure)}
            for mount, failure in zip(table.unloaded.values(), runtime.failures, strict=True)
        ]
        return _json(
            200,
            {
                "status": "ok",
                "plugins": len(table.mounts),
                "failed": failed,
                "store": runtime.store.description,
            },
        )


class Registry:
    """``/_plugins``: list, add and remove plug-ins, behind a bearer token; the changes are
    kept in the store and followed by every runtime that shares it (``SharedRegistry``). Off,
    it answers 404 saying how to turn it on."""

    prefix = REGISTRY_PREFIX
    subpaths = True

    def __init__(self, runtime: Runtime, enabled: bool, token: str | None) -> None:
        self.runtime = runtime
        self.enabled = enabled
        self.token = token
        self.shared: SharedRegistry | None = None  # the registry's changes, in the store

    async def follow(self) -> None:
        """Serve what the registry recorded in the store, and follow its changes."""
        if self.shared is None:
            self.shared = SharedRegistry(self.runtime)
        try:
            await self.shared.apply()
        except StoreError as exc:  # the poll tries again
            log.warning("the registry's changes cannot be read yet: %s", exc)
        if not isinstance(self.runtime.store, MemoryBackend):  # nobody else writes to this one
            self.shared.follow()

    async def stop(self) -> None:
        if self.shared is not None:
            await self.shared.stop()

    async def answer(
        self, message: RequestMessage, path: str, read_body: BodyReader | None
    ) -> ResponseMessage:
        if not self.enabled:
            return error_message(
                404, "the plug-in registry is not enabled (start the host with the registry on)"
            )
        if self.token is not None:
            given = first_value(message.get("headers") or [], "authorization") or ""
            expected = f"Bearer {self.token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                answer = error_message(401, "the registry needs 'Authorization: Bearer <token>'")
                answer["headers"].append(["www-authenticate", "Bearer"])
                return answer
        failed = await receive(message, read_body)
        if failed is not None:
            return failed
        method = message["method"].upper()
        if method == "HEAD":  # as for plug-ins: a GET whose body handle() drops
            method = "GET"
        name = path[len("/_plugins/") :] if path.startswith("/_plugins/") else ""
        if method == "GET" and not name:
            return _json(200, {"plugins": [spec.describe() for spec in self.runtime.plugins]})
        if method == "GET":
            mount = self.runtime.table.mounts.get(name)
            if mount is None:
                return error_message(404, f"no plug-in named {name!r}")
            return _json(200, mount.spec.describe())
        if method == "POST" and not name:
            return await self._register(message.get("body") or b"")
        if method == "DELETE" and name:
            return await self._unregister(name)
        allowed = "GET, POST" if not name else "GET, DELETE"
        answer = error_message(405, f"{method} is not allowed on {path} (allowed: {allowed})")
        answer["headers"].append(["allow", allowed])
        return answer

    async def _register(self, body: bytes) -> ResponseMessage:
        runtime = self.runtime
        try:
            definition = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_message(400, f"the plug-in definition is not valid JSON: {exc}")
        except RecursionError:
            return error_message(400, "the plug-in definition is nested too deeply")
        base_dir = runtime.base_dir or Path.cwd()
        try:
            spec = parse_plugin(definition, base_dir, where="plug-in definition")
        except ManifestError as exc:
            return error_message(400, str(exc), field=exc.field)
        if spec.path is not None and not spec.path.is_relative_to(base_dir.resolve()):
            return error_message(
                400,
                f"plug-in {spec.name!r}: 'path' must be a file inside the manifest's folder",
                field="path",
            )
        async with self._turn():
            try:
                await runtime.add(spec)
            except ManifestError as exc:
                return error_message(409, str(exc), field=exc.field)
            except PluginLoadError as exc:
                field_name = "path" if spec.path is not None else "url"
                detail = f"plug-in {spec.name!r}: {field_name!r} could not be loaded: {exc.reason}"
                return error_message(400, detail, field=field_name)
            if self.shared is not None:
                try:
                    await self.shared.added(spec.name, spec.source)
                except StoreError as exc:  # not recorded: not added
                    await runtime.remove(spec.name)
                    return registry_store_failure(exc)
        return _json(201, spec.describe())

    async def _unregister(self, name: str) -> ResponseMessage:
        runtime = self.runtime
        async with self._turn():
            if name not in runtime.table.mounts:
                return error_message(404, f"no plug-in named {name!r}")
            if self.shared is not None:
                try:
                    await self.shared.removed(name, name in runtime.manifest_names)
                except StoreError as exc:  # not recorded: not removed
                    return registry_store_failure(exc)
            spec = await runtime.remove(name)
        return _json(200, {"removed": spec.name})

    def _turn(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """Changes through /_plugins one at a time with the registry's polls."""
        if self.shared is None:
            return contextlib.nullcontext()
        return self.shared.lock


def _json(status: int, body: Any) -> ResponseMessage:
    return {
        "status": status,
        "headers": [["content-type", JSON]],
        "body": json.dumps(body).encode(),
    }
