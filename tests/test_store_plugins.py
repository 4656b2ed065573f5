"""The store as plug-ins reach it (``ctx.store``, a worker-style module's ``store``, an asgi
app's ``request.state.store``), namespaces, and a store that cannot be reached, in-process."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from valor.runtime import Runtime
from valor.server import SERVER_LOADERS
from valor.store import MemoryBackend
from valor.store.backend import Backend
from valor.store.sqlite import SqliteBackend
from valor.testing import TestClient

pytestmark = pytest.mark.timeout(60)

DECORATED = """
from valor import vlugin

async def on_create(ctx):
    await ctx.store.set("created-by", ctx.name)

@vlugin
async def handle(ctx, req):
    if req.method == "PUT":
        await ctx.store.set(req.path.strip("/"), req.text())
        return None
    if req.path == "/count":
        return str(await ctx.store.increment("count"))
    return {"value": await ctx.store.get(req.path.strip("/"))}
"""

SYNC = """
from valor import vlugin

def on_create(ctx):
    pass

@vlugin
def handle(ctx, req):  # sync: it runs in a thread, and waits for the store there
    total = ctx.store.sync.increment("hits")
    return {"hits": total, "also": ctx.store.sync.get("hits")}
"""

WORKER = """
async def onmessage(event):
    count = await store.increment("messages")  # noqa: F821 - provided by the runtime
    postMessage({"status": 200, "body": str(count)})  # noqa: F821
"""

ASGI = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def bump(request):
    return PlainTextResponse(str(await request.state.store.increment("bumps")))

app = Starlette(routes=[Route("/", bump, methods=["POST"])])
"""

ON_THE_LOOP = """
from valor import vlugin

def on_create(ctx):
    pass

@vlugin
async def handle(ctx, req):
    return ctx.store.sync.get("x")  # a sync call in async code: an error saying to await
"""


def manifest(tmp_path: Path, plugins: list[dict], **top: object) -> Path:
    sources = {"decorated": DECORATED, "sync": SYNC, "worker": WORKER, "asgi": ASGI}
    sources["on-the-loop"] = ON_THE_LOOP
    for name, source in sources.items():
        (tmp_path / f"{name}.py").write_text(source)
    path = tmp_path / "plugins.json"
    path.write_text(json.dumps({"plugins": plugins, **top}))
    return path


def client(tmp_path: Path, plugins: list[dict], backend: Backend | None = None) -> TestClient:
    runtime = Runtime(SERVER_LOADERS, store=backend or MemoryBackend())
    return TestClient(runtime, manifest(tmp_path, plugins))


def test_every_kind_of_python_plugin_reaches_its_store(tmp_path: Path) -> None:
    plugins = [
        {"name": "decorated", "type": "python", "path": "decorated.py"},
        {"name": "sync", "type": "python", "path": "sync.py"},
        {"name": "worker", "type": "python", "path": "worker.py"},
        {"name": "asgi", "type": "asgi", "path": "asgi.py"},
    ]
    with client(tmp_path, plugins) as http:
        assert http.get("/decorated/created-by").json() == {"value": "decorated"}
        assert http.put("/decorated/colour", content="blue").status_code == 204
        assert http.get("/decorated/colour").json() == {"value": "blue"}
        assert [http.get("/decorated/count").text for _ in range(3)] == ["1", "2", "3"]
        assert http.get("/sync").json() == {"hits": 1, "also": 1}
        assert http.get("/sync").json() == {"hits": 2, "also": 2}
        assert [http.get("/worker").text for _ in range(2)] == ["1", "2"]
        assert [http.post("/asgi/").text for _ in range(2)] == ["1", "2"]
        # Each plug-in has its own namespace: the same key, four counters.
        store = http.runtime.store
        assert isinstance(store, MemoryBackend)
        assert sorted(store._entries) == ["asgi", "decorated", "sync", "worker"]


def test_a_sync_call_on_the_event_loop_is_an_error_saying_to_await(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = [{"name": "on-the-loop", "type": "python", "path": "on-the-loop.py"}]
    with client(tmp_path, plugins) as http:
        answer = http.get("/on-the-loop")
        assert answer.status_code == 500
    # The error itself, in the log under the answer's error id, says what to do.
    logged = [r for r in caplog.records if answer.json()["error_id"] in r.getMessage()]
    assert logged and logged[0].exc_info is not None
    assert "use `await store.get(...)`" in str(logged[0].exc_info[1])


def test_plugins_naming_one_store_share_it(tmp_path: Path) -> None:
    plugins = [
        {"name": "one", "type": "python", "path": "decorated.py", "store": "team"},
        {"name": "two", "type": "python", "path": "decorated.py", "store": "team"},
        {"name": "own", "type": "python", "path": "decorated.py"},
    ]
    with client(tmp_path, plugins) as http:
        http.put("/one/note", content="from one")
        assert http.get("/two/note").json() == {"value": "from one"}
        assert http.get("/own/note").json() == {"value": None}
        assert http.get("/one/count").text == "1"
        assert http.get("/two/count").text == "2"
        assert http.get("/own/count").text == "1"


def test_a_bad_shared_store_name_is_a_manifest_error(tmp_path: Path) -> None:
    from valor.errors import ManifestError

    plugins = [{"name": "one", "type": "python", "path": "decorated.py", "store": "_valor"}]
    with pytest.raises(ManifestError, match="'store'"):
        client(tmp_path, plugins)


def test_the_test_client_starts_with_an_empty_store(tmp_path: Path) -> None:
    plugins = [{"name": "decorated", "type": "python", "path": "decorated.py"}]
    path = manifest(tmp_path, plugins)
    for _ in range(2):
        with TestClient(path) as http:
            assert http.get("/decorated/count").text == "1"


def test_an_unreachable_store_answers_503_naming_it_and_recovers(tmp_path: Path) -> None:
    folder = tmp_path / "not-yet"
    backend = SqliteBackend(folder / "store.sqlite3")
    plugins = [
        {"name": "decorated", "type": "python", "path": "decorated.py"},
        {"name": "worker", "type": "python", "path": "worker.py"},
    ]
    (tmp_path / "hello.py").write_text(
        "from valor import vlugin\n@vlugin\ndef hello(req):\n    return 'hi'\n"
    )
    plugins.append({"name": "hello", "type": "python", "path": "hello.py"})
    runtime = Runtime(SERVER_LOADERS, store=backend)
    # decorated's on_create needs the store: it fails to load; the others load.
    with TestClient(runtime, manifest(tmp_path, plugins), strict=False) as http:
        answer = http.get("/worker")
        assert answer.status_code == 503
        body = answer.json()
        assert body["status"] == 503 and body["store"] == backend.description
        assert "store.sqlite3" in body["detail"] and "'worker'" in body["detail"]
        assert http.get("/hello").text == "hi"  # the others keep serving
        folder.mkdir()
        assert http.get("/worker").text == "1"  # back by itself


def test_a_store_file_that_cannot_be_written_answers_503(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    plugins = [{"name": "worker", "type": "python", "path": "worker.py"}]
    files = [path, Path(f"{path}-wal")]
    with client(tmp_path, plugins, SqliteBackend(path)) as http, read_only(files) as lock:
        assert http.get("/worker").text == "1"  # the first write: the WAL, not the file
        lock()
        answer = http.get("/worker")
        assert answer.status_code == 503, answer.text
        assert answer.json()["store"] == f"sqlite:///{path}"
        lock(False)
        assert http.get("/worker").text == "2"


def test_a_full_store_answers_507(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    backend = SqliteBackend(path)
    plugins = [{"name": "decorated", "type": "python", "path": "decorated.py"}]
    with client(tmp_path, plugins, backend) as http:
        pages = http.run(backend._writer.run(lambda c: c.execute("PRAGMA page_count").fetchone()))
        # SQLite's own "database or disk is full", as a full disk gives it.
        http.run(backend._writer.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages[0]}")))
        answer = http.put("/decorated/big", content="x" * 60_000)
        assert answer.status_code == 507, answer.text
        assert "is full" in answer.json()["detail"]
        assert http.get("/decorated/created-by").json() == {"value": "decorated"}  # reads go on


@contextmanager
def read_only(files: list[Path]) -> Iterator[Callable[..., None]]:
    """``lock()`` makes ``files`` unwritable, ``lock(False)`` writable again, and nothing
    stays locked after the block. For root, whom permissions do not stop, the ext4
    immutable flag (chattr); for anyone else, the permission bits."""

    def lock(on: bool = True) -> None:
        for file in files:
            if os.geteuid() == 0:
                subprocess.run(["chattr", "+i" if on else "-i", str(file)], check=True)
            else:
                file.chmod(0o444 if on else 0o644)

    try:
        yield lock
    finally:
        for file in files:
            if file.exists():
                if os.geteuid() == 0:
                    subprocess.run(["chattr", "-i", str(file)], check=False)
                else:
                    file.chmod(0o644)


@pytest.mark.anyio
async def test_the_server_chooses_its_store_from_flag_manifest_or_default(tmp_path: Path) -> None:
    from valor.errors import ManifestError
    from valor.manifest import parse_manifest
    from valor.server import create_app

    plugins = [{"name": "decorated", "type": "python", "path": "decorated.py"}]
    chosen = manifest(tmp_path, plugins, store="sqlite:///data/chosen.sqlite3")
    plain = tmp_path / "plain" / "plugins.json"
    plain.parent.mkdir()
    plain.write_text(json.dumps({"plugins": []}))
    cases = [
        (create_app(plain), f"sqlite:///{plain.parent}/valor-store.sqlite3"),  # beside it
        (create_app(chosen), f"sqlite:///{tmp_path}/data/chosen.sqlite3"),  # the manifest's
        (create_app(chosen, store="memory:"), "memory:"),  # --store wins
    ]
    for app, description in cases:
        await app.startup()
        try:
            assert app.runtime.store.description == description
        finally:
            await app.runtime.close()
    for bad in ("", 5, ["memory:"]):
        with pytest.raises(ManifestError, match='"store"'):
            parse_manifest({"plugins": [], "store": bad}, tmp_path)


def test_an_asgi_app_that_lets_the_store_error_escape_answers_503_on_the_message_path(
    tmp_path: Path,
) -> None:
    # The browser's path (and TestClient's): the same answers as the server's pass-through
    # (tests/test_store_server.py), from the same store errors.
    from tests.test_store_server import STORE_APPS, store_apps_manifest

    folder = tmp_path / "not-yet"
    backend = SqliteBackend(folder / "store.sqlite3")
    runtime = Runtime(SERVER_LOADERS, store=backend)
    with TestClient(runtime, store_apps_manifest(tmp_path)) as http:
        python = http.get("/python")
        assert python.status_code == 503
        for name in STORE_APPS:
            answer = http.get(f"/{name}/")
            assert answer.status_code == 503, (name, answer.text)
            assert answer.headers["content-type"] == python.headers["content-type"]
            assert answer.json() == json.loads(python.text.replace("'python'", repr(name)))
        folder.mkdir()
        assert [http.get(f"/{name}/").text for name in STORE_APPS] == ["1", "1", "1"]


def test_an_asgi_app_with_its_own_store_error_handler_keeps_it(tmp_path: Path) -> None:
    (tmp_path / "own.py").write_text(
        "from starlette.responses import PlainTextResponse\n"
        "from valor.store import StoreError\n" + ASGI + "\n"
        "async def mine(request, exc):\n"
        "    return PlainTextResponse('the app says: ' + type(exc).__name__, 502)\n"
        "app.add_exception_handler(StoreError, mine)\n"
    )
    backend = SqliteBackend(tmp_path / "not-yet" / "store.sqlite3")
    plugins = [{"name": "own", "type": "asgi", "path": "own.py"}]
    with client(tmp_path, plugins, backend) as http:
        answer = http.post("/own/")
        assert (answer.status_code, answer.text) == (502, "the app says: StoreUnavailable")


def test_a_full_store_answers_507_from_an_asgi_app(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    backend = SqliteBackend(path)
    (tmp_path / "big.py").write_text(
        "from starlette.applications import Starlette\n"
        "from starlette.routing import Route\n"
        "async def put(request):\n"
        "    await request.state.store.set('big', 'x' * 60_000)\n"
        "app = Starlette(routes=[Route('/', put, methods=['PUT'])])\n"
    )
    plugins = [{"name": "big", "type": "asgi", "path": "big.py"}]
    with client(tmp_path, plugins, backend) as http:
        http.run(backend.get("x", "y", 0))  # the file exists
        pages = http.run(backend._writer.run(lambda c: c.execute("PRAGMA page_count").fetchone()))
        http.run(backend._writer.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages[0]}")))
        answer = http.put("/big/")
        assert answer.status_code == 507, answer.text
        assert answer.json()["detail"].startswith(f"plug-in 'big': store {backend.description!r}")


def test_a_starlette_app_wrapped_in_middleware_answers_503_too(tmp_path: Path) -> None:
    (tmp_path / "wrapped.py").write_text(
        ASGI
        + "\n"
        + "class Timing:  # a plain ASGI middleware, as Sentry's or a user's own: `.app` inside\n"
        + "    def __init__(self, app):\n"
        + "        self.app = app\n"
        + "    async def __call__(self, scope, receive, send):\n"
        + "        await self.app(scope, receive, send)\n"
        + "\n"
        + "app = Timing(app)\n"
    )
    backend = SqliteBackend(tmp_path / "not-yet" / "store.sqlite3")
    plugins = [{"name": "wrapped", "type": "asgi", "path": "wrapped.py"}]
    with client(tmp_path, plugins, backend) as http:
        answer = http.post("/wrapped/")
        assert answer.status_code == 503, answer.text
        assert answer.json()["store"] == backend.description
