"""The store of an isolated Python plug-in (``"isolation": "process"``): its calls travel to the
server over the helper's frames (``valor.kinds.python.store_channel``). Real processes
throughout: ``valor serve`` and the plug-ins' helper processes."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.parity.store_table import STORE_MANIFEST, compare_store_cases
from tests.servers import http_send, valor_server
from valor.runtime import Runtime
from valor.server import SERVER_LOADERS
from valor.store import MemoryBackend
from valor.store.backend import Backend
from valor.store.sqlite import SqliteBackend
from valor.testing import TestClient

pytestmark = pytest.mark.timeout(120)

COUNTER = """
import asyncio
import os

from valor import vlugin


async def on_create(ctx):
    await ctx.store.set("created", ctx.name)  # the store works while loading too


@vlugin
async def handle(ctx, req):
    if req.method == "PUT":
        await ctx.store.set("big", req.text())
        return None
    if req.path == "/crash":  # store calls in flight when the process dies
        for _ in range(20):
            asyncio.ensure_future(ctx.store.increment("count"))
        await asyncio.sleep(0)
        os._exit(3)
    if req.path == "/created":
        return {"created": await ctx.store.get("created")}
    return str(await ctx.store.increment("count"))
"""

SYNC = """
from valor import vlugin


def on_create(ctx):
    pass


@vlugin
def handle(ctx, req):  # a sync handler runs in a thread of the helper, and waits there
    return {"hits": ctx.store.sync.increment("hits"), "again": ctx.store.sync.get("hits")}
"""

WORKER = """
async def onmessage(event):
    count = await store.increment("messages")  # noqa: F821 - provided by the runtime
    postMessage({"status": 200, "body": str(count)})  # noqa: F821
"""


def isolated_copy(manifest: Path, folder: Path) -> Path:
    """``manifest`` and its plug-ins in ``folder``, every plug-in ``"isolation": "process"``."""
    shutil.copytree(manifest.parent, folder)
    path = folder / manifest.name
    definition = json.loads(path.read_text())
    for plugin in definition["plugins"]:
        plugin["isolation"] = "process"
    path.write_text(json.dumps(definition))
    return path


def test_the_plugin_level_store_table_answers_the_same_isolated(tmp_path: Path) -> None:
    # Two servers, each on a new SQLite store: the table's plug-ins in the server's process
    # and in helper processes. Values, versions, cursors and errors must be byte for byte
    # the same, the worker-style module's global ``store`` and the shared namespace included.
    isolated = isolated_copy(STORE_MANIFEST, tmp_path / "isolated")
    with (
        valor_server(STORE_MANIFEST, log_dir=tmp_path) as inside,
        valor_server(isolated, log_dir=tmp_path) as apart,
    ):
        sends = (http_send(inside.url), http_send(apart.url))
        compare_store_cases(*sends, (inside.url, apart.url), same_versions=True)


def plugins_file(tmp_path: Path, plugins: list[dict]) -> Path:
    for name, source in {"counter": COUNTER, "sync": SYNC, "worker": WORKER}.items():
        (tmp_path / f"{name}.py").write_text(source)
    path = tmp_path / "plugins.json"
    path.write_text(json.dumps({"plugins": plugins}))
    return path


def client(tmp_path: Path, plugins: list[dict], backend: Backend | None = None) -> TestClient:
    runtime = Runtime(SERVER_LOADERS, store=backend or MemoryBackend())
    return TestClient(runtime, plugins_file(tmp_path, plugins), strict=False)


def isolated(name: str, path: str, **more: object) -> dict:
    return {"name": name, "type": "python", "path": path, "isolation": "process", **more}


def test_concurrent_requests_of_one_helper_share_its_channel(tmp_path: Path) -> None:
    plugins = [isolated("counter", "counter.py"), isolated("sync", "sync.py")]
    with client(tmp_path, plugins) as http:
        assert http.get("/counter/created").json() == {"created": "counter"}
        with ThreadPoolExecutor(8) as pool:
            totals = list(pool.map(lambda _: http.post("/counter").text, range(60)))
        assert sorted(map(int, totals)) == list(range(1, 61))  # each its own, none lost
        assert http.get("/sync").json() == {"hits": 1, "again": 1}
        with ThreadPoolExecutor(4) as pool:
            hits = list(pool.map(lambda _: http.get("/sync").json()["hits"], range(12)))
        assert sorted(hits) == list(range(2, 14))


def test_a_helper_killed_with_store_calls_in_flight_restarts_clean(tmp_path: Path) -> None:
    plugins = [isolated("counter", "counter.py")]
    with client(tmp_path, plugins) as http:
        assert http.post("/counter").text == "1"
        assert http.post("/counter/crash").status_code == 502
        # The new process gets only its own replies: its first increment answers the count
        # as the store has it (the dead process's increments done or not, never half).
        total = int(http.post("/counter").text)
        assert 2 <= total <= 22
        assert [int(http.post("/counter").text) for _ in range(3)] == [
            total + 1,
            total + 2,
            total + 3,
        ]


def test_a_store_out_of_reach_answers_the_same_isolated(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    backend = SqliteBackend(folder / "store.sqlite3")
    plugins = [
        {"name": "inside", "type": "python", "path": "worker.py"},
        isolated("apart", "worker.py"),
    ]
    with client(tmp_path, plugins, backend) as http:
        inside, apart = http.get("/inside"), http.get("/apart")
        assert inside.status_code == apart.status_code == 503
        assert apart.json()["store"] == backend.description
        assert apart.json() == json.loads(inside.text.replace("'inside'", "'apart'"))
        assert apart.headers["content-type"] == inside.headers["content-type"]
        folder.mkdir()
        assert http.get("/apart").text == "1"  # back by itself, the same helper process


def test_a_full_store_answers_507_isolated(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    backend = SqliteBackend(path)
    plugins = [isolated("apart", "counter.py")]
    with client(tmp_path, plugins, backend) as http:
        pages = http.run(backend._writer.run(lambda c: c.execute("PRAGMA page_count").fetchone()))
        # SQLite's own "database or disk is full", as a full disk gives it.
        http.run(backend._writer.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages[0]}")))
        # (The first write refused frees room for the next: one write, the isolated one.)
        apart = http.put("/apart", content="x" * 60_000)
        assert apart.status_code == 507, apart.text
        detail = f"plug-in 'apart': store {backend.description!r} is full: "
        assert apart.json()["detail"].startswith(detail)
        assert apart.json()["store"] == backend.description
        assert http.get("/apart/created").json() == {"created": "apart"}  # reads go on


@pytest.mark.anyio
async def test_the_server_trusts_no_store_call_from_a_helper() -> None:
    from valor.kinds.python.store_channel import run_store_call
    from valor.store import Store

    backend = MemoryBackend()
    store = Store(backend, "mine")
    await Store(backend, "theirs").set("secret", "kept")
    bad = [
        ({"op": "get", "key": ""}, b"", "KeyInvalid"),
        ({"op": "list", "prefix": "", "start_after": None, "limit": 10**6}, b"", "BatchInvalid"),
        ({"op": "commit", "checks": [], "mutations": [["drop", "k", None, 0, 0]]}, b"", "Batch"),
        ({"op": "commit", "checks": [], "mutations": [["set", "k", None, 0, 3]]}, b"zzz", "Batch"),
        ({"op": "commit", "checks": [], "mutations": [["set", "k", None, 0, 70_000]]},
         b"b" + bytes(69_999), "ValueTooLarge"),
        ({"op": "commit", "checks": [["k", None]] * 101, "mutations": []}, b"", "BatchInvalid"),
        ({"op": "drop-everything"}, b"", "BatchInvalid"),
        ({"op": "get"}, b"", "BatchInvalid"),
    ]  # fmt: skip
    for head, body, error in bad:
        reply, _ = await run_store_call(store, head, body)
        assert reply["error"]["type"].startswith(error), (head, reply)
    # A call names no namespace: a helper reaches its plug-in's only.
    reply, data = await run_store_call(
        store, {"op": "get", "key": "secret", "namespace": "theirs"}, b""
    )
    assert reply == {"reply": True, "records": []} and data == b""
    assert backend._entries.keys() == {"theirs"}  # nothing written by the bad calls
