"""Streamed answers from a real ``valor serve`` on 127.0.0.1, read by httpx as any client:
events arrive as they are produced, a 50 MB download arrives byte-exact in flat memory, a
client that goes away closes the plug-in's generator, and an error in the middle of a stream
breaks the answer (never a short answer that looks whole) and is logged under an id."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import ASGI_MANIFEST, MANIFEST, Server, valor_server

MB = 1024 * 1024
PART = 64 * 1024
BLOCK = bytes(range(256)) * (PART // 256)


def pattern_digest(size: int) -> str:
    """The sha256 of what ``plugins/download.py`` sends, computed here independently."""
    digest = hashlib.sha256()
    for index in range(-(-size // PART)):
        shift = index % 256
        digest.update((BLOCK[shift:] + BLOCK[:shift])[: size - index * PART])
    return digest.hexdigest()


@pytest.fixture(scope="module")
def streaming_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Its own server, so its peak memory is this module's alone."""
    with valor_server(MANIFEST, log_dir=tmp_path_factory.mktemp("streaming")) as running:
        yield running


def stats(server: Server) -> dict:
    return httpx.get(server.url + "/events/stats").json()


@pytest.fixture(scope="module")
def asgi_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``valor serve plugins/asgi.json``: a streaming Starlette app."""
    with valor_server(ASGI_MANIFEST, log_dir=tmp_path_factory.mktemp("asgi")) as running:
        yield running


@pytest.mark.parametrize(
    ("host", "stream", "release"),
    [
        ("streaming_server", "/events?count=3&every=0&hold=1", "/events/release"),
        ("asgi_server", "/board/count?to=3&hold=1", "/board/release"),
    ],
)
def test_the_first_part_arrives_before_the_last_is_produced(
    request: pytest.FixtureRequest, host: str, stream: str, release: str
) -> None:
    # The last part is held until the client asks for it: a host that buffered the answer
    # would never deliver the first one, and this test would time out.
    server: Server = request.getfixturevalue(host)
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", stream) as answer,
    ):
        assert answer.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in answer.headers
        lines = answer.iter_lines()
        first = next(lines)
        assert first in ("id: 1", "1"), first
        assert client.post(release).status_code == 200
        rest = list(lines)
    assert rest[-1] in ("", "3") and any("3" in line for line in rest), rest


def test_server_sent_events_have_their_media_type_and_headers(streaming_server: Server) -> None:
    answer = httpx.get(streaming_server.url + "/events?count=2&every=0", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/event-stream"
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["x-valor-plugin"] == "events"
    assert answer.text.count("event: tick\n") == 2 and answer.text.endswith("\n\n")


def test_a_50_mb_download_arrives_byte_exact_in_flat_memory(streaming_server: Server) -> None:
    before = httpx.get(streaming_server.url + "/download/memory").json()["peak_bytes"]
    digest = hashlib.sha256()
    size = 0
    with httpx.stream("GET", streaming_server.url + "/download?mb=50", timeout=60) as answer:
        assert answer.headers["content-type"] == "application/octet-stream"
        for chunk in answer.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    assert size == 50 * MB
    assert digest.hexdigest() == pattern_digest(50 * MB)
    after = httpx.get(streaming_server.url + "/download/memory").json()["peak_bytes"]
    assert after - before < 20 * MB, f"peak memory grew {(after - before) / MB:.1f} MB"


def test_a_client_that_goes_away_closes_the_generator(streaming_server: Server) -> None:
    closed_before = stats(streaming_server)["closed"]
    with httpx.stream("GET", streaming_server.url + "/events?count=0&every=0.05") as answer:
        lines = answer.iter_lines()
        assert next(lines) == "id: 1"
        assert stats(streaming_server)["open"] == 1
    # The connection is closed here; the endless generator must be closed too.
    deadline = time.monotonic() + 5
    while stats(streaming_server) != {"open": 0, "closed": closed_before + 1}:
        assert time.monotonic() < deadline, stats(streaming_server)
        time.sleep(0.05)


def test_an_error_mid_stream_breaks_the_answer_and_is_logged(streaming_server: Server) -> None:
    received = b""
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", streaming_server.url + "/events?count=5&every=0&fail=2") as answer,
    ):
        assert answer.status_code == 200
        for chunk in answer.iter_bytes():
            received += chunk
    assert received.count(b"event: tick") == 2
    log = streaming_server.log()
    assert "plug-in 'events' failed in the middle of its stream [error_id=" in log
    assert "failed after 2 events, as asked" in log
    assert httpx.get(streaming_server.url + "/events?count=1").status_code == 200
