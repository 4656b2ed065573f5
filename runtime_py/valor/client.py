"""``ctx.http``: the ``httpx.AsyncClient`` Valor hands a plug-in, the same in both hosts.

Its transport (``PluginTransport``) sends a request one of two ways:

- to a sibling plug-in, inside the runtime (``Runtime.handle``), without the network or the
  service worker: a relative URL (resolved against ``INTERNAL_ORIGIN``), or one on the origin
  of the request being answered, under a path the runtime answers. The request carries the
  caller's correlation id in ``x-request-id``; calls nested deeper than ``MAX_DEPTH`` answer
  508 (Loop Detected);
- to the network, through the host's transport: httpx's own on the server, ``fetch`` in the
  browser (``valor.fetch_transport``), if the manifest's ``outbound.allow`` lists the host.

Either way an answer body past ``limits.response_bytes`` raises ``AnswerTooLarge`` as it is
read, and answer headers come as ``fetch()`` gives them (names in lower case, sorted, a
repeated name's values joined), so a plug-in reads the same list in both hosts.
"""

from __future__ import annotations

import asyncio
import codecs
import sys
from collections.abc import AsyncIterator
from operator import itemgetter
from typing import Any

import httpx

from .event_loop import started_task
from .headers import first_value
from .kinds.proxy.rules import DEFAULT_RESPONSE_BYTES
from .manifest import PluginSpec
from .outbound import CALLING, MAX_DEPTH, Calling
from .responses import error_message
from .status import reason
from .streaming import Stream, StreamError

INTERNAL_ORIGIN = "http://valor.internal"
"""The runtime's own address: relative URLs resolve against it, and it reaches no network."""

# Set by the transport for each hop, never passed on to a sibling.
_NOT_TO_SIBLINGS = frozenset(["host", "connection", "content-length", "transfer-encoding"])
_first = itemgetter(0)


class CallRefused(httpx.ConnectError):
    """A call to a host the plug-in's ``outbound.allow`` does not list."""


class AnswerTooLarge(httpx.ReadError):
    """An answer body larger than the plug-in's ``limits.response_bytes``."""


def make_client(runtime: Any, spec: PluginSpec) -> httpx.AsyncClient:
    """Plug-in ``spec``'s client in ``runtime``: httpx's defaults, Valor's transport, and no
    cookie jar."""
    transport = PluginTransport(runtime, spec, network_transport())
    # trust_env=False: proxies from the environment would be mounted beside this transport
    # and bypass its allow-list.
    client = PluginClient(base_url=INTERNAL_ORIGIN, transport=transport, trust_env=False)
    # httpx has no public way to turn its jar off; the attribute is where its ``cookies``
    # property keeps the jar.
    client._cookies = NoCookies()
    return client


class PluginClient(httpx.AsyncClient):
    """httpx's ``AsyncClient``, remembering the URLs it was given as text. A plug-in asks for
    the same few URLs again and again (``ctx.http.get("/target")``), and parsing one and
    merging it with ``base_url`` was a fifth of a sibling call's cost (measured)."""

    _MAX_URLS = 256  # a plug-in that builds URLs from its input keeps this many

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._urls: dict[str, httpx.URL] = {}
        self._urls_base = self.base_url

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        if isinstance(url, str):
            url = self._merged(url)
        return super().build_request(method, url, **kwargs)

    def _merged(self, url: str) -> httpx.URL:
        """``url`` merged with ``base_url`` as httpx merges it, from the cache if it is there.
        httpx's URLs are immutable, so one can serve every request made with it."""
        if self.base_url is not self._urls_base:  # a plug-in set base_url: start again
            self._urls.clear()
            self._urls_base = self.base_url
        merged = self._urls.get(url)
        if merged is None:
            if len(self._urls) >= self._MAX_URLS:
                self._urls.clear()
            merged = self._urls[url] = self._merge_url(url)
        return merged


class NoCookies(httpx.Cookies):
    """A jar that keeps no cookie from answers. One client serves all of a plug-in's requests,
    whoever made them: a cookie an upstream set during one must not go out with the next.
    The browser keeps none either (``credentials: "omit"``). It also spares httpx's cookie
    handling on every answer, a third of its own cost per call (measured)."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def network_transport() -> httpx.AsyncBaseTransport:
    """The host's way to the network: ``fetch`` in Pyodide, httpx's own elsewhere."""
    if sys.platform == "emscripten":
        from .fetch_transport import FetchTransport

        return FetchTransport()
    return httpx.AsyncHTTPTransport()


class PluginTransport(httpx.AsyncBaseTransport):
    """One plug-in's way out: to its siblings in ``runtime``, or through ``network``."""

    def __init__(self, runtime: Any, spec: PluginSpec, network: httpx.AsyncBaseTransport) -> None:
        self.runtime = runtime
        self.spec = spec
        self.network = network
        self.limit = spec.limits.get("response_bytes", DEFAULT_RESPONSE_BYTES)
        self.own_origin: str | None = getattr(network, "own_origin", None)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        current = CALLING.get()
        if current is not None and current.runtime is not self.runtime:
            current = None  # another runtime's request: no correlation, no nesting
        path = self._sibling_path(request.url, current)
        if path is not None:
            return await self._sibling(request, path, current)
        self._check_allowed(request)
        response = await self.network.handle_async_request(request)
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > self.limit:
            await response.aclose()
            raise self._too_large(request)
        return httpx.Response(
            response.status_code,
            headers=fetch_view(response.headers.multi_items()),
            stream=_Limited(response.stream, self, request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self.network.aclose()

    # -- siblings ----------------------------------------------------------------------------

    def _sibling_path(self, url: httpx.URL, current: Calling | None) -> str | None:
        """The path and query below the runtime's root path for a request the runtime
        answers itself; None for one that goes to the network."""
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
        target = url.raw_path.decode("ascii")
        if origin == INTERNAL_ORIGIN:
            return target
        own = current.origin if current is not None else None
        if origin != own and origin != self.own_origin:
            return None
        root = self.runtime.root_path
        path = target.partition("?")[0]
        if root and not (path == root or path.startswith(root + "/")):
            return None
        for prefix in self.runtime.intercept_prefixes:
            under = prefix.rstrip("/")
            if path == under or path.startswith(under + "/"):
                return target[len(root) :] or "/"
        return None

    async def _sibling(
        self, request: httpx.Request, target: str, current: Calling | None
    ) -> httpx.Response:
        runtime = self.runtime
        chain = current.chain() if current is not None else [self.spec.name]
        if len(chain) >= MAX_DEPTH:
            found = runtime.plugin_at(runtime.root_path + target.partition("?")[0])
            called = found[0].spec.name if found is not None else target
            detail = (
                f"plug-in calls nest deeper than {MAX_DEPTH}: "
                f"{' -> '.join([*chain, called])} (a loop?)"
            )
            return _response(error_message(508, detail), request, self)
        # One pass over the headers: each look-up in httpx's Headers decodes them all again.
        headers = [[n, v] for n, v in request.headers.multi_items() if n not in _NOT_TO_SIBLINGS]
        has_id = any(pair[0] == "x-request-id" for pair in headers)
        if current is not None and current.correlation_id and not has_id:
            headers.append(["x-request-id", current.correlation_id])
        origin = (current.origin if current is not None else None) or INTERNAL_ORIGIN
        message = {
            "url": origin + runtime.root_path + target,
            "method": request.method,
            "headers": headers,
            "body": await request.aread() or None,
        }
        # A task of its own: the sibling's deadline is its task's, apart from the caller's,
        # whose cancellation (its own deadline) still reaches it through the await.
        answer = started_task(runtime.handle(message))
        timeout = request.extensions.get("timeout", {}).get("read")
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            answer.cancel()

        # A timer rather than asyncio.wait_for, which doubled the cost of a sibling call.
        timer = None
        if timeout is not None and not answer.done():
            timer = asyncio.get_running_loop().call_later(timeout, expire)
        try:
            answer_message = await answer
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not expired or (task is not None and task.cancelling()):
                raise  # the caller's own cancellation
            raise httpx.ReadTimeout(
                f"plug-in at {target!r} did not answer within {timeout:g} s", request=request
            ) from None
        finally:
            if timer is not None:
                timer.cancel()
        return _response(answer_message, request, self)

    # -- limits ------------------------------------------------------------------------------

    def _check_allowed(self, request: httpx.Request) -> None:
        allow = self.spec.outbound
        if allow is None:
            return
        url = request.url
        port = url.port or {"http": 80, "https": 443}.get(url.scheme)
        if any(_matches(pattern, url.host, port) for pattern in allow):
            return
        host = f"{url.host}:{port}" if url.port else url.host
        listed = ", ".join(allow) or "nothing"
        raise CallRefused(
            f"plug-in {self.spec.name!r} may not call {host}: the manifest's "
            f"outbound.allow for it lists {listed}",
            request=request,
        )

    def _too_large(self, request: httpx.Request) -> AnswerTooLarge:
        return AnswerTooLarge(
            f"the answer from {request.url.host or 'a sibling'} is larger than plug-in "
            f"{self.spec.name!r}'s limit of {self.limit} bytes (limits.response_bytes)",
            request=request,
        )


def _matches(pattern: str, host: str, port: int | None) -> bool:
    """Whether ``outbound.allow``'s ``pattern`` (``*``, a host, ``*.`` a domain's subdomains,
    any of them with ``:port``) lets a call reach ``host`` on ``port``."""
    if pattern == "*":
        return True
    name = pattern
    if pattern.rfind(":") > pattern.rfind("]"):  # a port, not an IPv6 address's colons
        name, _, wanted = pattern.rpartition(":")
        if int(wanted) != port:
            return False
    name = name.strip("[]")
    if name.startswith("*."):
        return host.endswith(name[1:])
    return host == name


def fetch_view(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Answer headers as ``fetch()`` gives them: names in lower case, sorted, a repeated
    name's values joined by ``", "`` (``set-cookie``, which a browser never shows, apart)."""
    combined: list[tuple[str, str]] = []
    for name, value in sorted(((n.lower(), v) for n, v in pairs), key=_first):
        if combined and combined[-1][0] == name and name != "set-cookie":
            combined[-1] = (name, combined[-1][1] + ", " + value)
        else:
            combined.append((name, value))
    return combined


def _response(message: Any, request: httpx.Request, limits: PluginTransport) -> httpx.Response:
    """A runtime's answer (a wire response) as an httpx response to ``request``."""
    status = message["status"]
    body = message["body"]
    stream: httpx.AsyncByteStream
    if isinstance(body, Stream):
        stream = _Limited(_Parts(body), limits, request)
    elif body and len(body) > limits.limit:
        stream = _Limited(httpx.ByteStream(body), limits, request)  # raises as it is read
    else:  # within the limit already: one async generator less per call (measured)
        stream = httpx.ByteStream(body or b"")
    response = httpx.Response(
        status,
        headers=message["headers"],
        stream=stream,
        request=request,
        extensions={"reason_phrase": reason(status).encode("ascii")},
    )
    charset = _charset(first_value(message["headers"], "content-type"))
    if charset is not None:
        response.encoding = charset
    return response


_charsets: dict[str, str | None] = {}


def _charset(content_type: str | None) -> str | None:
    """The known encoding a ``content-type`` names, as ``httpx.Response.encoding`` would find
    it; None when it names none (httpx then uses the client's ``default_encoding``). Siblings
    answer with few content types, and httpx parses the header with ``email.message`` on every
    ``.text``: an eighth of a sibling call's cost (measured)."""
    if content_type is None:
        return None
    if content_type in _charsets:
        return _charsets[content_type]
    charset = httpx.Response(200, headers={"content-type": content_type}).charset_encoding
    if charset is not None:
        try:
            codecs.lookup(charset)
        except LookupError:
            charset = None
    if len(_charsets) < 64:  # content types made up per answer would not fill memory
        _charsets[content_type] = charset
    return charset


class _Parts(httpx.AsyncByteStream):
    """A sibling's streamed answer, part by part."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for part in self.stream:
                yield part
        except StreamError as exc:  # as a broken answer from the network reads
            raise httpx.ReadError(str(exc)) from None

    async def aclose(self) -> None:
        await self.stream.aclose()


class _Limited(httpx.AsyncByteStream):
    """An answer body that raises ``AnswerTooLarge`` once past the plug-in's limit."""

    def __init__(self, stream: Any, transport: PluginTransport, request: httpx.Request) -> None:
        self.stream = stream
        self.transport = transport
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size, limit = 0, self.transport.limit
        async for chunk in self.stream:
            size += len(chunk)
            if size > limit:
                raise self.transport._too_large(self.request)
            yield chunk

    async def aclose(self) -> None:
        await self.stream.aclose()
