"""The server's engine for the proxy kind (CPython only): httpx, streaming the answer body so
that one past the cap is never read whole, and relaying it still compressed if it was. The kind
itself (options, path confinement, headers, the cap, failures) is ``valor.kinds.proxy.core``,
shared with the browser."""

from __future__ import annotations

import httpx

from ...manifest import PluginSpec
from .core import HeaderPairs, ProxyPlugin, TimedOut, TooLarge, Unreachable, load


class HttpxEngine:
    def __init__(self, timeout: float) -> None:
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)

    async def send(
        self, method: str, url: str, headers: HeaderPairs, body: bytes | None, max_body: int
    ) -> tuple[int, HeaderPairs, bytes]:
        request = self._client.build_request(method, url, headers=headers, content=body)
        try:
            response = await self._client.send(request, stream=True)
            try:
                data = await _read(response, max_body)
            finally:
                await response.aclose()
        except httpx.TimeoutException:
            raise TimedOut from None
        except httpx.HTTPError as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
        return response.status_code, response.headers.multi_items(), data

    async def close(self) -> None:
        await self._client.aclose()


async def _read(response: httpx.Response, max_body: int) -> bytes:
    announced = response.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > max_body:
        raise TooLarge
    chunks, size = [], 0
    async for chunk in response.aiter_raw():
        size += len(chunk)
        if size > max_body:
            raise TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def load_proxy(spec: PluginSpec) -> ProxyPlugin:
    # The runtime's timeout (a 504) fires first; this one only frees the connection.
    return await load(spec, HttpxEngine(spec.timeout + 1))
