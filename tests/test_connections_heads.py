"""The answer heads of ``valor.connections``' protocols: fields seen valid before skip their
checks, and any other head goes the way uvicorn's own protocols take it, errors included."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from valor.connections import GuardedH11Protocol, GuardedHttpToolsProtocol
from valor.processes import free_port

HEADS: dict[str, list[Any]] = {
    "/ok": [(b"content-type", b"text/plain"), (b"x-id", b"a b\tc")],
    "/empty-value": [(b"x-empty", b"")],
    "/close": [(b"connection", b"close")],
    "/no-length": [],  # chunked
    "/crlf-value": [(b"x-id", b"1\r\nx-injected: 1")],
    "/nul-value": [(b"x-id", b"a\x00b")],
    "/space-value": [(b"x-id", b" padded ")],  # h11 refuses it, uvicorn's httptools not
    "/bad-name": [(b"x id", b"1")],
    "/empty-name": [(b"", b"1")],
    "/str-pair": [("x-id", "1")],
    "/not-pairs": [(b"x-id",)],
    "/float-status": [],
}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    headers = list(HEADS[path])
    body = b"hello"
    if path != "/no-length":
        headers.append((b"content-length", b"5"))
    status: Any = 200.0 if path == "/float-status" else 200
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(
    scope="module",
    params=[
        (H11Protocol, GuardedH11Protocol),
        (HttpToolsProtocol, GuardedHttpToolsProtocol),
    ],
    ids=["h11", "httptools"],
)
def servers(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """uvicorn's own protocol and Valor's, each serving ``app``."""
    urls, stops = [], []
    for protocol in request.param:
        port = free_port()
        config = uvicorn.Config(
            app,
            port=port,
            http=protocol,
            log_level="critical",
            access_log=False,  # as valor serve runs: uvicorn's access log takes the slow way
            lifespan="off",
            loop="asyncio",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=asyncio.run, args=(server.serve(),), daemon=True)
        thread.start()
        urls.append(f"http://127.0.0.1:{port}")
        stops.append((server, thread))
    with httpx.Client(timeout=10) as client:
        for url in urls:  # until each answers
            for _ in range(200):
                try:
                    client.get(url + "/ok")
                    break
                except httpx.TransportError:
                    threading.Event().wait(0.05)
    yield urls[0], urls[1]
    for server, thread in stops:
        server.should_exit = True
        thread.join(timeout=10)


def outcome(client: httpx.Client, url: str) -> Any:
    """What a client gets: the status, headers and body, or the error's kind."""
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        return type(exc).__name__
    headers = [(k, v) for k, v in response.headers.items() if k not in ("date", "server")]
    return response.status_code, headers, response.content


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", list(HEADS))
def test_each_head_is_answered_as_uvicorns_protocol_answers_it(
    servers: tuple[str, str], path: str
) -> None:
    uvicorns, valors = servers
    # Each twice, on a new connection, and after a valid answer: fields seen before skip
    # their checks, the invalid ones are never among them.
    for _ in range(2):
        with httpx.Client(timeout=10) as client:
            expected = outcome(client, uvicorns + path)
        with httpx.Client(timeout=10) as client:
            assert outcome(client, valors + "/ok")[0] == 200
            assert outcome(client, valors + path) == expected
    if path in ("/crlf-value", "/nul-value", "/bad-name", "/not-pairs"):
        assert isinstance(expected, str)  # refused, not answered: the test can fail
