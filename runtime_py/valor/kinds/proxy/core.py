"""``type: "proxy"``: forwards requests to ``url``, the same in both hosts (pure Python).

Method, path (below the mount prefix, appended to the upstream's path), query, headers and
body go upstream; its status, headers and body come back unchanged. An unreachable upstream
answers 502, a slow one 504, both with a JSON error body. A path that would leave the
upstream's path answers 400; an answer body past ``limits.response_bytes`` answers 502.

Everything but sending is here, once: the options, the path confinement and header rules
(``proxy.rules``), the body cap and the failures. A host gives only its ``ProxyEngine``: httpx
on the server (``proxy.server``), ``fetch`` in the browser (``proxy.browser``).
"""

from __future__ import annotations

from typing import Protocol

from ...failures import PluginFailed
from ...manifest import PluginSpec
from ...wire import RequestMessage, ResponseMessage
from .rules import (
    DEFAULT_RESPONSE_BYTES,
    UnsafePath,
    forward_headers,
    relay_headers,
    upstream_url,
)

HeaderPairs = list[tuple[str, str]]


class Unreachable(Exception):
    """The upstream could not be reached; the message says why."""


class TimedOut(Exception):
    """The upstream did not answer in time."""


class TooLarge(Exception):
    """The upstream's answer body is over ``max_body`` bytes."""


class ProxyEngine(Protocol):
    """A host's way of sending one request upstream."""

    async def send(
        self, method: str, url: str, headers: HeaderPairs, body: bytes | None, max_body: int
    ) -> tuple[int, HeaderPairs, bytes]:
        """The upstream's status, headers and body; ``Unreachable``, ``TimedOut`` or
        ``TooLarge`` (an engine may stop reading at ``max_body`` bytes) instead."""
        ...

    async def close(self) -> None: ...


class ProxyPlugin:
    def __init__(self, spec: PluginSpec, engine: ProxyEngine) -> None:
        self.spec = spec
        self.base = spec.url or ""
        self.max_body = spec.limits.get("response_bytes", DEFAULT_RESPONSE_BYTES)
        self.engine = engine

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        try:
            target = upstream_url(self.base, message["url"])
        except UnsafePath as exc:
            raise self._failed(400, str(exc)) from None
        headers = forward_headers(message["headers"], message["url"])
        try:
            status, answer_headers, body = await self.engine.send(
                message["method"], target, headers, message.get("body") or None, self.max_body
            )
            if len(body) > self.max_body:
                raise TooLarge
        except TooLarge:
            detail = f"answered a body larger than the limit of {self.max_body} bytes"
            raise self._failed(502, f"upstream {self.base} {detail}") from None
        except TimedOut:
            raise self._failed(504, f"upstream {self.base} did not answer in time") from None
        except Unreachable as exc:
            raise self._failed(502, f"upstream {self.base} is unreachable: {exc}") from None
        return {"status": status, "headers": relay_headers(answer_headers), "body": body}

    def _failed(self, status: int, detail: str) -> PluginFailed:
        return PluginFailed(status, f"plug-in {self.spec.name!r}: {detail}")

    async def close(self) -> None:
        await self.engine.close()


async def load(spec: PluginSpec, engine: ProxyEngine) -> ProxyPlugin:
    return ProxyPlugin(spec, engine)
