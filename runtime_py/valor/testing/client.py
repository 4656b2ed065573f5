"""``TestClient``: an ``httpx.Client`` whose transport answers in-process through a
``Runtime``, as Starlette's TestClient answers through an ASGI app."""

from __future__ import annotations

from collections.abc import Awaitable, Coroutine, Mapping
from os import PathLike
from typing import Any, TypeVar

import httpx

from ..kinds import Loader
from ..manifest import Manifest, load_manifest
from ..runtime import Runtime
from ..status import reason
from ..streaming import complete
from ..wire import ResponseMessage
from .loop import LoopThread

T = TypeVar("T")


class RuntimeTransport(httpx.BaseTransport):
    """Hands each request to ``runtime`` as a wire message, on an event loop of its own in a
    background thread; ``manifest`` loads on entering (or on the first request)."""

    def __init__(self, runtime: Runtime, manifest: Manifest | None, strict: bool = True) -> None:
        self.runtime = runtime
        self.manifest = manifest
        self.strict = strict
        self._loop: LoopThread | None = None

    def __enter__(self) -> RuntimeTransport:
        self.start()
        return self

    def start(self) -> None:
        """Start the loop and load the plug-ins (idempotent)."""
        if self._loop is not None:
            return
        self._loop = LoopThread("valor-test-client")
        try:
            if self.manifest is not None:
                self.run(self.runtime.load(self.manifest, strict=self.strict))
        except BaseException:
            self.close()
            raise

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the transport's loop and return its result."""
        self.start()
        assert self._loop is not None
        return self._loop.run(coroutine)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        # Header names in lower case, as both hosts hand them over (ASGI and fetch() both do).
        message = {
            "url": str(request.url),
            "method": request.method,
            "headers": [[name, value] for name, value in request.headers.multi_items()],
            "body": request.read() or None,
        }
        answer = self.run(_whole(self.runtime.handle(message)))  # type: ignore[arg-type]
        return httpx.Response(
            answer["status"],
            headers=[(name, value) for name, value in answer["headers"]],
            content=answer["body"],
            request=request,
            # Valor's reason phrases, as both hosts send them (not httpx's).
            extensions={"reason_phrase": reason(answer["status"]).encode("latin-1")},
        )

    def close(self) -> None:
        """Unload the plug-ins and stop the loop."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run(self.runtime.close())
        finally:
            loop.stop()


class TestClient(httpx.Client):
    """Answer requests in-process, with httpx's whole API. ``app`` is a manifest path, a
    ``Manifest`` or a ``Runtime``.

    ::

        with TestClient("plugins/plugins.json") as client:
            assert client.get("/hello").text == "Hello Plugin!"

    The plug-ins load on entering the block (or on the first request) and unload on leaving it;
    by default a plug-in that fails to load raises ``PluginLoadError``. A ``Runtime`` lets you
    choose its settings (``root_path``, ``registry``, ...); ``manifest`` is then loaded into it.
    The runtime runs on an event loop in a background thread, so the client works from sync
    and async tests alike, and plug-in state lasts for the whole block. Other keyword
    arguments go to ``httpx.Client`` (``headers=``, ``cookies=``, ``timeout=``, ...).
    """

    __test__ = False  # not a test class, whatever pytest thinks of the name

    def __init__(
        self,
        app: str | PathLike[str] | Manifest | Runtime,
        manifest: str | PathLike[str] | Manifest | None = None,
        *,
        base_url: str = "http://testserver",
        strict: bool = True,
        loaders: Mapping[str, Loader] | None = None,
        follow_redirects: bool = True,
        **options: Any,
    ) -> None:
        if isinstance(app, Runtime):
            runtime = app
        else:
            if manifest is not None:
                raise TypeError(
                    "give the manifest once: TestClient(manifest) or (runtime, manifest)"
                )
            if loaders is None:
                from ..server import SERVER_LOADERS

                loaders = SERVER_LOADERS
            runtime = Runtime(loaders)
            manifest = app
        if manifest is not None and not isinstance(manifest, Manifest):
            manifest = load_manifest(manifest)
        self.transport = RuntimeTransport(runtime, manifest, strict)
        super().__init__(
            base_url=base_url,
            transport=self.transport,
            follow_redirects=follow_redirects,
            **options,
        )

    @property
    def runtime(self) -> Runtime:
        return self.transport.runtime

    @property
    def manifest(self) -> Manifest | None:
        return self.transport.manifest

    def start(self) -> None:
        """Load the plug-ins now rather than on entering the block or the first request."""
        self.transport.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop (e.g. ``runtime.add(spec)``); return its result."""
        return self.transport.run(coroutine)


async def _whole(answer: Awaitable[ResponseMessage]) -> ResponseMessage:
    """A streamed answer read to its end: the client's response holds the whole body."""
    return await complete(await answer)
