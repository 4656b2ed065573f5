"""``TestClient``: answer requests in-process through a ``Runtime``, like Starlette's."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Awaitable, Coroutine, Mapping, Sequence
from os import PathLike
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from ..loaders import Loader
from ..manifest import Manifest, load_manifest
from ..runtime import Runtime
from ..streaming import complete
from ..wire import RequestMessage, ResponseMessage
from .loop import LoopThread
from .response import Response

T = TypeVar("T")
HeaderTypes = Mapping[str, str] | Sequence[tuple[str, str]] | None
ParamTypes = Mapping[str, Any] | Sequence[tuple[str, Any]] | None


class Client:
    """The request API every Valor test client shares; subclasses implement ``send``."""

    base_url = "http://testserver"

    def request(
        self,
        method: str,
        url: str,
        *,
        params: ParamTypes = None,
        headers: HeaderTypes = None,
        content: bytes | str | None = None,
        data: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Response:
        """Send one request. ``content`` is the raw body, ``data`` a form, ``json`` a JSON value."""
        if not urlsplit(url).scheme:  # relative to base_url, whose path is kept, as in httpx
            url = self.base_url.rstrip("/") + "/" + url.lstrip("/")
        return self.send(build_request(method, url, params, headers, content, data, json))

    def send(self, message: RequestMessage) -> Response:
        raise NotImplementedError

    def get(self, url: str, **kwargs: Any) -> Response:
        return self.request("GET", url, **kwargs)

    def head(self, url: str, **kwargs: Any) -> Response:
        return self.request("HEAD", url, **kwargs)

    def options(self, url: str, **kwargs: Any) -> Response:
        return self.request("OPTIONS", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> Response:
        return self.request("PUT", url, **kwargs)

    def patch(self, url: str, **kwargs: Any) -> Response:
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> Response:
        return self.request("DELETE", url, **kwargs)


def build_request(
    method: str,
    url: str,
    params: ParamTypes = None,
    headers: HeaderTypes = None,
    content: bytes | str | None = None,
    data: Mapping[str, Any] | None = None,
    json: Any = None,
) -> RequestMessage:
    """The wire request for a client call."""
    if sum(x is not None for x in (content, data, json)) > 1:
        raise TypeError("give one of content=, data= or json=")
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    # Lower-case names, as both hosts hand them over (ASGI and fetch() both do).
    header_list = [[str(name).lower(), str(value)] for name, value in pairs]
    body: bytes | None = None
    media_type = None
    if content is not None:
        body = content.encode() if isinstance(content, str) else bytes(content)
    elif data is not None:
        body, media_type = urlencode(data, doseq=True).encode(), "application/x-www-form-urlencoded"
    elif json is not None:
        body, media_type = jsonlib.dumps(json).encode(), "application/json"
    if media_type and not any(name.lower() == "content-type" for name, _ in header_list):
        header_list.append(["content-type", media_type])
    if params:
        parts = urlsplit(url)
        query = "&".join(q for q in (parts.query, urlencode(params, doseq=True)) if q)
        url = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return {"url": url, "method": method.upper(), "headers": header_list, "body": body}


class TestClient(Client):
    """Answer requests in-process. ``app`` is a manifest path, a ``Manifest`` or a ``Runtime``.

    ::

        with TestClient("plugins/plugins.json") as client:
            assert client.get("/hello").text == "Hello Plugin!"

    The plug-ins load on entering the block (or on the first request) and unload on leaving it;
    by default a plug-in that fails to load raises ``PluginLoadError``. A ``Runtime`` lets you
    choose its settings (``root_path``, ``registry``, ...); ``manifest`` is then loaded into it.
    The runtime runs on an event loop in a background thread, so the client works from sync
    and async tests alike, and plug-in state lasts for the whole block.
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
    ) -> None:
        if isinstance(app, Runtime):
            self.runtime = app
        else:
            if manifest is not None:
                raise TypeError(
                    "give the manifest once: TestClient(manifest) or (runtime, manifest)"
                )
            if loaders is None:
                from ..server import SERVER_LOADERS

                loaders = SERVER_LOADERS
            self.runtime = Runtime(loaders)
            manifest = app
        if manifest is not None and not isinstance(manifest, Manifest):
            manifest = load_manifest(manifest)
        self.manifest = manifest
        self.base_url = base_url
        self.strict = strict
        self._loop: LoopThread | None = None

    def __enter__(self) -> TestClient:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    def close(self) -> None:
        """Unload the plug-ins and stop the loop."""
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            loop.run(self.runtime.close())
        finally:
            loop.stop()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the client's loop (e.g. ``runtime.add(spec)``); return its result."""
        self.start()
        assert self._loop is not None
        return self._loop.run(coroutine)

    def send(self, message: RequestMessage) -> Response:
        # A streamed answer is read to its end: the client's Response holds the whole body.
        return Response.from_message(self.run(_whole(self.runtime.handle(message))))


async def _whole(answer: Awaitable[ResponseMessage]) -> ResponseMessage:
    return await complete(await answer)
