"""Streamed answers in the runtime, in-process: every way a plug-in streams (sync and async
generators, ``StreamingResponse``, worker-style parts, an ASGI app's ``more_body``), the
timeout on the first part and between parts, errors in the middle, and closing that reaches
the plug-in's generator. Over real HTTP: ``test_server_streaming.py``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from valor.kinds.asgi.core import load_asgi
from valor.kinds.python.core import load_python
from valor.manifest import parse_manifest
from valor.runtime import Runtime
from valor.streaming import Stream, StreamError

pytestmark = pytest.mark.anyio

PLUGINS = {
    "sync": """
from valor import Response, vlugin
CLOSED = []

def parts():
    try:
        yield "one,"
        yield b"two,"
        yield bytearray(b"three")
    finally:
        CLOSED.append(True)

@vlugin
def on_request(req):
    if req.path == "/closed":
        return {"closed": len(CLOSED)}
    return Response(parts(), media_type="text/csv", headers={"x-kind": "sync"})
""",
    "agen": """
import asyncio
from valor import StreamingResponse, vlugin
CLOSED = []

async def parts(mode):
    try:
        yield "first"
        if mode == "/idle":
            await asyncio.sleep(10)
        if mode == "/fail":
            raise ValueError("broken in the middle")
        if mode == "/bad-part":
            yield 42
        yield "second"
    finally:
        CLOSED.append(mode)

async def never():
    await asyncio.sleep(10)
    yield "too late"

@vlugin
async def on_request(req):
    if req.path == "/closed":
        return {"closed": CLOSED}
    if req.path == "/late":
        return StreamingResponse(never())
    if req.path == "/no-content":
        return StreamingResponse(never(), status_code=204)
    return StreamingResponse(parts(req.path), media_type="text/plain")
""",
    "worker": """
import asyncio

async def post_later():
    for word in ("b", "c"):
        await asyncio.sleep(0)
        postMessage({"body": word, "more": True})
    postMessage({"body": "d"})

async def onmessage(event):
    postMessage({"status": 200, "headers": [["content-type", "text/plain"]], "body": "a",
                 "more": True})
    asyncio.get_running_loop().create_task(post_later())
""",
}

ASGI_STREAM = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("no lifespan")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    for part in (b"x", b"y"):
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b"z", "more_body": False})
"""


@pytest.fixture
async def runtime(tmp_path: Path):
    plugins = []
    for name, source in PLUGINS.items():
        (tmp_path / f"{name}.py").write_text(source)
        plugins.append({"name": name, "type": "python", "path": f"{name}.py", "timeout": 0.5})
    (tmp_path / "app.py").write_text(ASGI_STREAM)
    plugins.append({"name": "asgi", "type": "asgi", "path": "app.py"})
    runtime = Runtime({"python": load_python, "asgi": load_asgi})
    await runtime.load(parse_manifest({"plugins": plugins}, tmp_path), strict=True)
    yield runtime
    await runtime.close()


def get(path: str, method: str = "GET") -> dict:
    return {"url": "http://h" + path, "method": method, "headers": [], "body": None}


async def read(answer: dict) -> list[bytes]:
    assert isinstance(answer["body"], Stream), answer
    return [part async for part in answer["body"]]


async def test_a_sync_generator_streams_each_part(runtime: Runtime) -> None:
    answer = await runtime.handle(get("/sync"))
    assert answer["status"] == 200
    assert ["content-type", "text/csv"] in answer["headers"]
    assert ["x-valor-plugin", "sync"] in answer["headers"]
    assert await read(answer) == [b"one,", b"two,", b"three"]
    closed = await runtime.handle(get("/sync/closed"))
    assert json.loads(closed["body"]) == {"closed": 1}


async def test_async_generator_asgi_app_and_worker_parts_stream(runtime: Runtime) -> None:
    assert await read(await runtime.handle(get("/agen/ok"))) == [b"first", b"second"]
    assert await read(await runtime.handle(get("/asgi"))) == [b"x", b"y", b"z"]
    assert await read(await runtime.handle(get("/worker"))) == [b"a", b"b", b"c", b"d"]


async def test_a_stream_closed_early_closes_the_generator(runtime: Runtime) -> None:
    answer = await runtime.handle(get("/agen/idle"))
    assert await answer["body"].__anext__() == b"first"
    await answer["body"].aclose()  # what a host does when its client goes away
    closed = json.loads((await runtime.handle(get("/agen/closed")))["body"])["closed"]
    assert closed == ["/idle"]


async def test_head_closes_the_generator_unread(runtime: Runtime) -> None:
    answer = await runtime.handle(get("/agen/head", "HEAD"))
    assert answer["body"] == b"" and answer["status"] == 200
    closed = json.loads((await runtime.handle(get("/agen/closed")))["body"])["closed"]
    assert closed == ["/head"]


async def test_no_first_part_within_the_timeout_is_a_504(runtime: Runtime) -> None:
    answer = await runtime.handle(get("/agen/late"))
    assert answer["status"] == 504, answer
    assert "did not answer within 0.5 seconds" in json.loads(answer["body"])["detail"]


@pytest.mark.parametrize(
    ("path", "detail"),
    [
        ("/agen/idle", "'agen' sent no part of its stream for 0.5 seconds"),
        ("/agen/fail", "'agen' failed in the middle of its stream"),
        ("/agen/bad-part", "'agen' failed in the middle of its stream"),
    ],
)
async def test_a_stream_that_stalls_or_fails_ends_with_an_error_logged_under_an_id(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, path: str, detail: str
) -> None:
    answer = await runtime.handle(get(path))
    assert answer["status"] == 200  # the head was sent with the first part
    parts = answer["body"]
    assert await parts.__anext__() == b"first"
    # Its own handler on "valor": ``valor call`` run in-process stops it propagating.
    logger = logging.getLogger("valor")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.ERROR, logger="valor"), pytest.raises(StreamError) as caught:
            await parts.__anext__()
    finally:
        logger.removeHandler(caplog.handler)
    assert detail in str(caught.value) and "[error_id=" in str(caught.value)
    error_id = str(caught.value).split("[error_id=")[1].rstrip("]")
    assert any(error_id in record.getMessage() for record in caplog.records)
    closed = json.loads((await runtime.handle(get("/agen/closed")))["body"])["closed"]
    assert path.removeprefix("/agen") in closed


def test_the_test_client_and_valor_call_read_a_stream_whole(tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.servers import ASGI_MANIFEST, MANIFEST
    from valor.testing import TestClient

    with TestClient(ASGI_MANIFEST) as client:
        answer = client.get("/board/count?to=3")
        assert (answer.status_code, answer.text) == (200, "1\n2\n3\n")
    called = subprocess.run(
        [sys.executable, "-m", "valor.cli", "call", str(MANIFEST), "GET",
         "/events?count=3&every=0&fail=1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert called.returncode == 1
    assert "plug-in 'events' failed in the middle of its stream [error_id=" in called.stderr


async def test_a_stream_with_a_status_that_has_no_body_is_a_500(runtime: Runtime) -> None:
    answer = await runtime.handle(get("/agen/no-content"))
    assert answer["status"] == 500, answer
    assert "a 204 answer cannot have a body" in json.loads(answer["body"])["detail"]


@pytest.mark.timeout(30)
async def test_a_stream_read_in_a_task_with_a_deadline_of_its_own_keeps_that_deadline(
    runtime: Runtime,
) -> None:
    # A handler reading another plug-in's stream (called in a task of its own, as a sibling
    # call is): its own deadline stays, and a part that stalls still ends the stream on its
    # plug-in's timeout.
    import asyncio

    deadlines = runtime.deadlines
    task = deadlines.start(10)
    try:
        answer = await asyncio.ensure_future(runtime.handle(get("/sync")))
        assert await read(answer) == [b"one,", b"two,", b"three"]
        assert deadlines.has(task)
        parts = (await asyncio.ensure_future(runtime.handle(get("/agen/idle"))))["body"]
        assert await parts.__anext__() == b"first"
        with pytest.raises(StreamError, match=r"sent no part of its stream for 0\.5 seconds"):
            await parts.__anext__()
        assert deadlines.has(task)
    finally:
        assert deadlines.stop(task) is False  # never cancelled: its 10 s did not pass
