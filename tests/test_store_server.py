"""The store under ``valor serve``: several worker processes share one SQLite file, a write
answered with success survives a worker killed mid-load, servers share a Redis, and a store
out of reach answers 503 until it is back."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, Server, redis_server, valor_server
from tests.waiting import wait_for
from valor.processes import stop_process

pytestmark = pytest.mark.timeout(420)

PID = "from valor import vlugin\nimport os\n@vlugin\ndef pid(req):\n    return str(os.getpid())\n"


def notes_manifest(folder: Path) -> Path:
    """notes (the example, unchanged) and pid, which answers its worker's process id."""
    (folder / "pid.py").write_text(PID)
    manifest = folder / "plugins.json"
    plugins = [
        {"name": "notes", "type": "python", "path": str(ROOT / "plugins" / "notes.py")},
        {"name": "pid", "type": "python", "path": "pid.py"},
    ]
    manifest.write_text(json.dumps({"plugins": plugins}))
    return manifest


async def post_notes(url: str, texts: list[str], connections: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=180) as client:
        return await asyncio.gather(*(client.post("/notes", json={"text": text}) for text in texts))


def every_worker(server: Server, workers: int, timeout: float = 60) -> list[httpx.Client]:
    """One keep-alive connection to each worker process (new connections until each worker
    has answered one)."""
    found: dict[str, httpx.Client] = {}
    deadline = time.monotonic() + timeout
    while len(found) < workers:
        assert time.monotonic() < deadline, f"reached only workers {sorted(found)}"
        client = httpx.Client(
            base_url=server.url, timeout=30, limits=httpx.Limits(max_connections=1)
        )
        pid = client.get("/pid").text
        if pid in found:
            client.close()
        else:
            found[pid] = client
    return list(found.values())


def test_workers_share_notes_and_their_ids(tmp_path: Path) -> None:
    manifest = notes_manifest(tmp_path)
    with valor_server(manifest, "--workers", "4", log_dir=tmp_path, startup=60) as server:
        assert f"store: sqlite:///{tmp_path}/store-" in server.log()  # printed at start
        health = httpx.get(server.url + "/_health").json()
        assert health["store"].startswith(f"sqlite:///{tmp_path}/store-")
        texts = [f"note {index}" for index in range(1000)]
        answers = asyncio.run(post_notes(server.url, texts, connections=1000))
        refused = [answer.text for answer in answers if answer.status_code != 201]
        assert not refused, f"{len(refused)} of 1000 refused; the first: {refused[0]}"
        ids = [answer.json()["id"] for answer in answers]
        assert sorted(ids) == list(range(1, 1001))
        assert all(a.headers["location"] == f"/notes/{a.json()['id']}" for a in answers)
        by_id = {answer.json()["id"]: answer.json()["text"] for answer in answers}
        for client in every_worker(server, 4):
            try:
                listed = {note["id"]: note["text"] for note in client.get("/notes").json()["notes"]}
                assert listed == by_id
                for note_id, text in by_id.items():
                    assert client.get(f"/notes/{note_id}").json() == {"id": note_id, "text": text}
            finally:
                client.close()


def test_a_worker_killed_mid_load_loses_no_acknowledged_note(tmp_path: Path) -> None:
    manifest = notes_manifest(tmp_path)
    with valor_server(manifest, "--workers", "2", log_dir=tmp_path, startup=60) as server:
        workers = every_worker(server, 2)
        victim = int(workers[0].get("/pid").text)
        for client in workers:
            client.close()
        acknowledged: dict[int, str] = {}
        failed = 0

        async def load() -> None:
            nonlocal failed
            limits = httpx.Limits(max_connections=20)
            # Generous timeouts: a busy machine's answers are slow, and only a lost answer
            # counts.
            async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=120) as client:

                async def one(index: int) -> None:
                    nonlocal failed
                    text = f"kept {index}"
                    try:
                        answer = await client.post("/notes", json={"text": text})
                    except httpx.TransportError:
                        failed += 1
                        return
                    if answer.status_code == 201:
                        acknowledged[answer.json()["id"]] = text
                    else:
                        failed += 1

                async def kill_when_busy() -> None:
                    while len(acknowledged) < 150:
                        await asyncio.sleep(0.01)
                    os.kill(victim, signal.SIGKILL)

                await asyncio.gather(kill_when_busy(), *(one(index) for index in range(600)))

        asyncio.run(load())
        assert len(acknowledged) >= 150
        deadline = time.monotonic() + 60
        while "died" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "died" in server.log()  # the kill landed while notes were being added
        with httpx.Client(base_url=server.url, timeout=30) as client:
            listed = {note["id"]: note["text"] for note in client.get("/notes").json()["notes"]}
            lost = {
                note_id for note_id, text in acknowledged.items() if listed.get(note_id) != text
            }
            assert not lost, f"{len(lost)} acknowledged notes lost; {failed} requests failed"


def test_two_servers_sharing_a_redis_see_each_others_notes(tmp_path: Path, redis_url: str) -> None:
    manifest = notes_manifest(tmp_path)
    store = ("--store", redis_url)
    with (
        valor_server(manifest, *store, log_dir=tmp_path) as one,
        valor_server(manifest, *store, log_dir=tmp_path) as two,
    ):
        assert httpx.get(one.url + "/_health").json()["store"] == redis_url
        first = httpx.post(one.url + "/notes", json={"text": "from one"}).json()
        second = httpx.post(two.url + "/notes", json={"text": "from two"}).json()
        assert second["id"] == first["id"] + 1  # one counter
        assert httpx.get(f"{two.url}/notes/{first['id']}").json() == first
        assert httpx.get(f"{one.url}/notes/{second['id']}").json() == second
        for server in (one, two):
            listed = httpx.get(server.url + "/notes").json()["notes"]
            assert first in listed and second in listed


def test_redis_down_answers_503_naming_it_and_recovers_by_itself(tmp_path: Path) -> None:
    manifest = notes_manifest(tmp_path)
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    with (
        redis_server(redis_dir) as redis,
        valor_server(manifest, "--store", redis.url, log_dir=tmp_path) as server,
    ):
        assert httpx.post(server.url + "/notes", json={"text": "before"}).status_code == 201
        stop_process(redis.process)
        answer = httpx.post(server.url + "/notes", json={"text": "while down"}, timeout=60)
        assert answer.status_code == 503, answer.text
        body = answer.json()
        assert body["store"] == redis.url and body["error"] == "Service Unavailable"
        assert f"store {redis.url!r} is unavailable" in body["detail"]
        assert httpx.get(server.url + "/notes", timeout=60).status_code == 503
        assert httpx.get(server.url + "/pid").status_code == 200  # the others keep serving
        with redis_server(redis_dir, port=redis.port):
            answer = httpx.post(server.url + "/notes", json={"text": "after"}, timeout=60)
            assert answer.status_code == 201, answer.text
            assert httpx.get(server.url + "/notes").json()["notes"] == [answer.json()]


TOKEN = {"authorization": "Bearer store-test"}
ADDED = "from valor import vlugin\n@vlugin\ndef added(req):\n    return 'added'\n"


def registry_server(manifest: Path, *args: str, log_dir: Path):
    return valor_server(
        manifest, "--registry", *args, log_dir=log_dir, env={"VALOR_TOKEN": "store-test"}
    )


def test_every_worker_follows_the_registry_and_it_outlasts_a_restart(tmp_path: Path) -> None:
    manifest = notes_manifest(tmp_path)
    (tmp_path / "added.py").write_text(ADDED)
    store = ("--store", str(tmp_path / "registry.sqlite3"))
    definition = {"name": "added", "type": "python", "path": "added.py"}
    with registry_server(manifest, "--workers", "2", *store, log_dir=tmp_path) as server:
        workers = every_worker(server, 2)
        posted = httpx.post(server.url + "/_plugins", json=definition, headers=TOKEN)
        assert posted.status_code == 201, posted.text
        for client in workers:
            wait_for(lambda client=client: client.get("/added").status_code == 200, 60)
        gone = httpx.delete(server.url + "/_plugins/notes", headers=TOKEN)
        assert gone.status_code == 200, gone.text
        for client in workers:
            wait_for(lambda client=client: client.get("/notes").status_code == 404, 60)
            listed = [p["name"] for p in client.get("/_plugins", headers=TOKEN).json()["plugins"]]
            assert sorted(listed) == ["added", "pid"]
            client.close()
    # A new start with the same store serves what the registry recorded.
    with registry_server(manifest, *store, log_dir=tmp_path) as again:
        assert httpx.get(again.url + "/added").text == "added"
        assert httpx.get(again.url + "/notes").status_code == 404
        assert (
            httpx.post(again.url + "/_plugins", json=definition, headers=TOKEN).status_code == 409
        )


def test_servers_sharing_a_redis_follow_each_others_registry(
    tmp_path: Path, redis_url: str
) -> None:
    manifest = notes_manifest(tmp_path)
    (tmp_path / "added.py").write_text(ADDED)
    flush_redis(redis_url)
    store = ("--store", redis_url)
    definition = {"name": "added", "type": "python", "path": "added.py"}
    with (
        registry_server(manifest, *store, log_dir=tmp_path) as one,
        registry_server(manifest, *store, log_dir=tmp_path) as two,
    ):
        assert httpx.post(one.url + "/_plugins", json=definition, headers=TOKEN).status_code == 201
        wait_for(lambda: httpx.get(two.url + "/added").status_code == 200, 60)
        assert httpx.delete(two.url + "/_plugins/added", headers=TOKEN).status_code == 200
        wait_for(lambda: httpx.get(one.url + "/added").status_code == 404, 60)


def flush_redis(url: str) -> None:
    """Start from an empty Redis: the session's server is shared by the tests."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


STARLETTE_STORE = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def bump(request):  # StoreUnavailable escapes: Starlette's 500, unless Valor answers
    return PlainTextResponse(str(await request.state.store.increment("bumps")))

app = Starlette(routes=[Route("/", bump)])
"""

FASTAPI_STORE = """
from fastapi import FastAPI, Request

app = FastAPI()

@app.get("/")
async def bump(request: Request) -> int:
    return await request.state.store.increment("bumps")
"""

RAW_STORE = """
async def app(scope, receive, send):  # plain ASGI, no framework: it raises before answering
    if scope["type"] != "http":
        return
    total = await scope["state"]["store"].increment("bumps")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(total).encode()})
"""

PYTHON_STORE = """
from valor import vlugin

def on_create(ctx):
    pass

@vlugin
async def bump(ctx, req):
    return str(await ctx.store.increment("bumps"))
"""

STORE_APPS = {"starlette": STARLETTE_STORE, "fastapi": FASTAPI_STORE, "raw": RAW_STORE}


def store_apps_manifest(folder: Path) -> Path:
    """Three asgi apps that let the store's errors escape, and a python plug-in beside them."""
    plugins = [{"name": "python", "type": "python", "path": "python.py"}]
    (folder / "python.py").write_text(PYTHON_STORE)
    for name, source in STORE_APPS.items():
        (folder / f"{name}_app.py").write_text(source)  # not starlette.py: it would shadow it
        plugins.append({"name": name, "type": "asgi", "path": f"{name}_app.py"})
    manifest = folder / "plugins.json"
    manifest.write_text(json.dumps({"plugins": plugins}))
    return manifest


def test_an_asgi_app_that_lets_the_store_error_escape_answers_503_naming_it(
    tmp_path: Path,
) -> None:
    # The store a folder that is not there yet: out of reach until it is made.
    folder = tmp_path / "not-yet"
    store = f"sqlite:///{folder}/store.sqlite3"
    manifest = store_apps_manifest(tmp_path)
    with valor_server(manifest, "--store", store, log_dir=tmp_path) as server:
        python = httpx.get(server.url + "/python", timeout=60)
        assert python.status_code == 503, python.text
        for name in STORE_APPS:
            answer = httpx.get(server.url + f"/{name}/", timeout=60)
            assert answer.status_code == 503, (name, answer.text)
            assert answer.reason_phrase == python.reason_phrase
            assert answer.headers["content-type"] == python.headers["content-type"]
            assert answer.json() == json.loads(python.text.replace("'python'", repr(name)))
            assert answer.json()["store"] == f"sqlite:///{folder}/store.sqlite3"
        folder.mkdir()  # back: each answers by itself
        for name in STORE_APPS:
            assert httpx.get(server.url + f"/{name}/", timeout=60).text == "1"
