"""Server loader for ``type: "proxy"``: forwards requests to ``url`` with httpx.

Method, path (below the mount prefix, appended to the upstream's path), query, headers and
body go upstream; its status, headers and body come back unchanged (still compressed if they
were). An unreachable upstream answers 502, a slow one 504, both with a JSON error body. A path
that would leave the upstream's path answers 400; an answer body past ``limits.response_bytes``
(read as it streams, never whole) answers 502.
"""

from __future__ import annotations

import httpx

from ..manifest import PluginSpec
from ..wire import RequestMessage, ResponseMessage
from .failures import PluginFailed
from .proxy_rules import (
    DEFAULT_RESPONSE_BYTES,
    UnsafePath,
    forward_headers,
    relay_headers,
    upstream_url,
)


class TooLarge(Exception):
    pass


class ProxyPlugin:
    def __init__(self, spec: PluginSpec) -> None:
        self.spec = spec
        self.base = spec.url or ""
        self.max_body = spec.limits.get("response_bytes", DEFAULT_RESPONSE_BYTES)
        self._client = httpx.AsyncClient(
            # The runtime's timeout (a 504) fires first; this one only frees the connection.
            timeout=spec.timeout + 1,
            follow_redirects=False,
            trust_env=False,
        )

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        try:
            target = upstream_url(self.base, message["url"])
        except UnsafePath as exc:
            raise PluginFailed(400, f"plug-in {self.spec.name!r}: {exc}") from None
        request = self._client.build_request(
            message["method"],
            target,
            headers=forward_headers(message["headers"], message["url"]),
            content=message.get("body") or None,
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                body = await self._read(response)
            finally:
                await response.aclose()
        except TooLarge:
            detail = (
                f"plug-in {self.spec.name!r}: upstream {self.base} answered a body larger than "
                f"the limit of {self.max_body} bytes"
            )
            raise PluginFailed(502, detail) from None
        except httpx.TimeoutException:
            detail = f"plug-in {self.spec.name!r}: upstream {self.base} did not answer in time"
            raise PluginFailed(504, detail) from None
        except httpx.HTTPError as exc:
            detail = (
                f"plug-in {self.spec.name!r}: upstream {self.base} is unreachable: "
                f"{type(exc).__name__}: {exc}"
            )
            raise PluginFailed(502, detail) from None
        return {
            "status": response.status_code,
            "headers": relay_headers(response.headers.multi_items()),
            "body": body,
        }

    async def _read(self, response: httpx.Response) -> bytes:
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > self.max_body:
            raise TooLarge
        chunks, size = [], 0
        async for chunk in response.aiter_raw():
            size += len(chunk)
            if size > self.max_body:
                raise TooLarge
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        await self._client.aclose()


async def load_proxy(spec: PluginSpec) -> ProxyPlugin:
    return ProxyPlugin(spec)
