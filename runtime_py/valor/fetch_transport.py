"""The browser's way to the network for ``ctx.http`` (Pyodide only): an httpx transport over
the runtime worker's ``fetch``.

What a page's ``fetch`` cannot do, it cannot do here, and the error says so:

- another origin must allow this site with CORS (``Access-Control-Allow-Origin``), and its
  answer's headers beyond the CORS-safelisted ones are seen only if it exposes them
  (``Access-Control-Expose-Headers``); a refusal looks like an unreachable host to a page, so
  ``httpx.ConnectError`` names both;
- the forbidden request headers (``cookie``, ``origin``, ``referer``, ...) raise
  ``HeaderNotAllowed``; those httpx sets itself for framing (``host``, ``connection``,
  ``content-length``, ``accept-encoding``) are left to the browser;
- no cookies are sent or kept (``credentials: "omit"``), the HTTP cache is not used
  (``cache: "no-store"``), and redirects are followed by the browser;
- an answer the browser decoded (``content-encoding``) comes without that header nor
  ``content-length``, as its body is the decoded one.

Timeouts: httpx's ``read`` timeout bounds the wait for the answer's head and for each part of
its body (``httpx.ReadTimeout``), as the server's transport does once connected.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx

from .kinds.shared.browser_ffi import field, js_bytes, js_message, js_object

# Set by the browser itself; httpx adds them to every request.
SET_BY_BROWSER = frozenset(
    ["host", "connection", "content-length", "accept-encoding", "transfer-encoding", "keep-alive"]
)
# The Fetch standard's forbidden request headers (besides those above, and proxy-*, sec-*).
FORBIDDEN = frozenset(
    [
        "accept-charset",
        "access-control-request-headers",
        "access-control-request-method",
        "cookie",
        "cookie2",
        "date",
        "dnt",
        "expect",
        "origin",
        "referer",
        "set-cookie",
        "te",
        "trailer",
        "upgrade",
        "via",
    ]
)


class HeaderNotAllowed(httpx.RequestError):
    """A request header the browser's ``fetch`` may not send."""


class FetchTransport(httpx.AsyncBaseTransport):
    """``fetch`` from the runtime worker, which the service worker lets through to the
    network (calls to the runtime's own plug-ins never get here: ``valor.client``)."""

    def __init__(self) -> None:
        from js import location

        self.own_origin = str(location.origin)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        from js import AbortController, Array, fetch
        from pyodide.ffi import JsException

        headers = []
        for name, value in request.headers.multi_items():
            if name in SET_BY_BROWSER:
                continue
            if name in FORBIDDEN or name.startswith(("proxy-", "sec-")):
                raise HeaderNotAllowed(
                    f"a browser does not let fetch() send the {name!r} header (a forbidden "
                    "request header), so plug-ins cannot send it in the browser host",
                    request=request,
                )
            headers.append([name, value])
        body = await request.aread()
        controller = AbortController.new()
        init: dict[str, Any] = {
            "method": request.method,
            "headers": headers,
            "signal": controller.signal,
            "credentials": "omit",
            "cache": "no-store",
        }
        if body:
            init["body"] = js_bytes(body)
        url = str(request.url)
        read = request.extensions.get("timeout", {}).get("read")
        try:
            response = await _within(fetch(url, js_object(init)), read, controller)
        except TimeoutError:
            raise httpx.ReadTimeout(
                f"{url} did not answer within {read:g} s", request=request
            ) from None
        except JsException as exc:
            raise httpx.ConnectError(
                f"fetch() of {url} failed ({js_message(exc)}): the host is unreachable, or "
                "it does not allow this site to call it (CORS: its answer needs "
                "Access-Control-Allow-Origin)",
                request=request,
            ) from None
        pairs = [(str(n), str(v)) for n, v in Array.from_(response.headers).to_py()]
        if any(name == "content-encoding" for name, _ in pairs):  # the body is decoded
            pairs = [p for p in pairs if p[0] not in ("content-encoding", "content-length")]
        return httpx.Response(
            int(response.status),
            headers=pairs,
            stream=_Body(response, controller, read, request),
            extensions={"reason_phrase": str(response.statusText).encode("latin-1")},
        )


class _Body(httpx.AsyncByteStream):
    """A fetched answer's body, part by part as the browser hands it over."""

    def __init__(self, response: Any, controller: Any, read: float | None, request: Any) -> None:
        self.response = response
        self.controller = controller
        self.read = read
        self.request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        from pyodide.ffi import JsException

        body = field(self.response, "body")
        if body is None:
            return
        reader = body.getReader()
        while True:
            try:
                part = await _within(reader.read(), self.read, self.controller)
            except TimeoutError:
                raise httpx.ReadTimeout(
                    f"a part of the answer did not come within {self.read:g} s",
                    request=self.request,
                ) from None
            except JsException as exc:
                raise httpx.ReadError(js_message(exc), request=self.request) from None
            if part.done:
                return
            yield part.value.to_bytes()

    async def aclose(self) -> None:
        self.controller.abort()  # stops a body still coming; nothing once it has


async def _within(promise: Awaitable[Any], seconds: float | None, controller: Any) -> Any:
    """``await promise`` for at most ``seconds`` (None: no limit); a timeout or a cancellation
    aborts the fetch."""
    try:
        if seconds is None:
            return await promise
        async with asyncio.timeout(seconds):
            return await promise
    except BaseException:
        controller.abort()
        raise
