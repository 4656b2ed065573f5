"""The store under ``valor serve``: several worker processes share one SQLite file, and a
write answered with success survives a worker killed mid-load."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, Server, valor_server

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
        assert [answer.status_code for answer in answers] == [201] * 1000
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
