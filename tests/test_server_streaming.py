"""Streamed answers from a real ``valor serve`` on 127.0.0.1, read by httpx as any client:
events arrive as they are produced, a 50 MB download arrives byte-exact in flat memory, a
client that goes away closes the plug-in's generator, and an error in the middle of a stream
breaks the answer (never a short answer that looks whole) and is logged under an id."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import ASGI_MANIFEST, MANIFEST, Server, valor_server
from tests.waiting import wait_for

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


# Hostile streams (issue 20): generators that never await, a loop held between parts, sync
# generators that block. Each plug-in counts its streams' parts and closes in ``STATS``.
HOSTILE = {
    # A CSV export from memory: an async generator that never awaits.
    "export.py": "from valor import StreamingResponse, vlugin\n"
    "STATS = {'parts': 0, 'closed': 0}\n"
    "async def rows():\n    try:\n        while True:\n"
    "            STATS['parts'] += 1\n            yield b'x' * 1023 + b'\\n'\n"
    "    finally:\n        STATS['closed'] += 1\n"
    "async def spin_after_first():\n    yield b'first\\n'\n    while True:\n        pass\n"
    "@vlugin\nasync def on_request(req):\n"
    "    if req.path == '/stats':\n        return STATS\n"
    "    if req.path == '/spin':\n        return StreamingResponse(spin_after_first())\n"
    "    return StreamingResponse(rows(), media_type='text/csv')\n",
    # The same from a Starlette StreamingResponse (an asgi plug-in).
    "board.py": "from starlette.applications import Starlette\n"
    "from starlette.responses import JSONResponse, StreamingResponse\n"
    "from starlette.routing import Route\n"
    "STATS = {'parts': 0, 'closed': 0}\n"
    "async def rows():\n    try:\n        while True:\n"
    "            STATS['parts'] += 1\n            yield b'x' * 1023 + b'\\n'\n"
    "    finally:\n        STATS['closed'] += 1\n"
    "async def spin_after_first():\n    yield b'first\\n'\n    while True:\n        pass\n"
    "async def export(request):\n    return StreamingResponse(rows(), media_type='text/csv')\n"
    "async def spin(request):\n    return StreamingResponse(spin_after_first())\n"
    "async def stats(request):\n    return JSONResponse(STATS)\n"
    "app = Starlette(routes=[Route('/', export), Route('/spin', spin), Route('/stats', stats)])\n",
    # Sync generators that block between parts.
    "stall.py": "import time\nfrom valor import StreamingResponse, vlugin\n"
    "def parts():\n    yield b'first\\n'\n    time.sleep(30)\n    yield b'late\\n'\n"
    "@vlugin\ndef on_request(req):\n    return StreamingResponse(parts())\n",
    "sync_download.py": "from valor import StreamingResponse, vlugin\n"
    "def parts():\n    for _ in range(4):\n        yield b'y' * 1024\n"
    "@vlugin\ndef on_request(req):\n    return StreamingResponse(parts())\n",
    "hello.py": "from valor import vlugin\n"
    "@vlugin\nasync def on_request(req):\n    return 'hello'\n",
}


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("hostile")
    for name, source in HOSTILE.items():
        (folder / name).write_text(source)
    plugins = [
        {"name": "export", "type": "python", "path": "export.py", "timeout": 2},
        {"name": "board", "type": "asgi", "path": "board.py", "timeout": 2},
        {"name": "stall", "type": "python", "path": "stall.py", "timeout": 60},
        {"name": "sync_download", "type": "python", "path": "sync_download.py", "timeout": 2},
        {"name": "hello", "type": "python", "path": "hello.py", "timeout": 2},
    ]
    manifest = folder / "plugins.json"
    manifest.write_text(json.dumps({"plugins": plugins}))
    with valor_server(manifest, log_dir=folder) as running:
        yield running


def cpu_seconds(pid: int) -> float:
    """The CPU time (user and system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("plugin", ["export", "board"])
def test_a_stream_that_never_awaits_is_closed_when_its_client_leaves(
    hostile_server: Server, plugin: str
) -> None:
    url = f"{hostile_server.url}/{plugin}"
    closed = httpx.get(url + "/stats", timeout=10).json()["closed"]
    received = 0
    with httpx.stream("GET", url, timeout=10) as answer:
        for chunk in answer.iter_raw():
            received += len(chunk)
            if received >= 64 * 1024:
                break
    # Gone: within 3 s the generator's finally has run, and the other plug-ins answer.
    left = time.monotonic()
    stats: dict = {}

    def generator_closed() -> bool:
        stats.update(httpx.get(url + "/stats", timeout=10).json())
        return stats["closed"] == closed + 1

    wait_for(generator_closed, 30, "the generator's close")
    assert time.monotonic() - left < 3, f"closed after {time.monotonic() - left:.1f} s"
    assert httpx.get(hostile_server.url + "/hello", timeout=5).text == "hello"
    # Nothing produces any more, and the server's CPU is free.
    parts = stats["parts"]
    before = cpu_seconds(hostile_server.process.pid)
    time.sleep(1)  # a span to measure CPU over, not a wait for an event
    assert cpu_seconds(hostile_server.process.pid) - before < 0.5
    assert httpx.get(url + "/stats", timeout=10).json()["parts"] == parts


@pytest.mark.timeout(60)
@pytest.mark.parametrize("plugin", ["export", "board"])
def test_a_stream_holding_the_event_loop_between_parts_is_broken_by_the_watchdog(
    hostile_server: Server, plugin: str
) -> None:
    started = time.monotonic()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("GET", f"{hostile_server.url}/{plugin}/spin", timeout=30) as answer,
    ):
        assert answer.status_code == 200
        for _ in answer.iter_raw():
            pass
    assert time.monotonic() - started < 10  # its timeout is 2 s
    assert httpx.get(hostile_server.url + "/hello", timeout=5).text == "hello"
    assert f"plug-in {plugin!r} sent no part of its stream for 2 seconds" in hostile_server.log()


@pytest.mark.timeout(90)
def test_sync_streams_that_block_cost_their_own_plugin_alone(hostile_server: Server) -> None:
    # More blocked generators than a shared pool of a 2-core machine has threads; the stall
    # plug-in has 8 of its own (the default), so 4 of its streams wait for one.
    clients = [httpx.Client(base_url=hostile_server.url, timeout=60) for _ in range(12)]
    streams = [client.stream("GET", "/stall") for client in clients]
    try:
        answers = [stream.__enter__() for stream in streams[:12]]
        for answer in answers:
            assert next(answer.iter_raw()) == b"first\n"
        for _ in range(3):
            download = httpx.get(hostile_server.url + "/sync_download", timeout=10)
            assert download.status_code == 200 and download.content == b"y" * 4096
    finally:
        for client in clients:
            client.close()
