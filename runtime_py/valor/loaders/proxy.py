"""Server loader for ``type: "proxy"``: forwards requests to ``url`` with httpx.

Method, path (below the mount prefix, appended to the upstream's path), query, headers and
body go upstream; its status, headers and body come back unchanged (still compressed if they
were). An unreachable upstream answers 502, a slow one 504, both with a JSON error body.
"""

from __future__ import annotations

import httpx

from ..manifest import PluginSpec
from ..wire import RequestMessage, ResponseMessage
from .failures import PluginFailed
from .proxy_rules import forward_headers, relay_headers, upstream_url


class ProxyPlugin:
    def __init__(self, spec: PluginSpec) -> None:
        self.spec = spec
        self.base = spec.url or ""
        self._client = httpx.AsyncClient(
            # The runtime's timeout (a 504) fires first; this one only frees the connection.
            timeout=spec.timeout + 1,
            follow_redirects=False,
            trust_env=False,
        )

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        target = upstream_url(self.base, message["url"])
        request = self._client.build_request(
            message["method"],
            target,
            headers=forward_headers(message["headers"], message["url"]),
            content=message.get("body") or None,
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
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

    async def close(self) -> None:
        await self._client.aclose()


async def load_proxy(spec: PluginSpec) -> ProxyPlugin:
    return ProxyPlugin(spec)
