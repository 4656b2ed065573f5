"""The registry's changes kept in the store (``valor.registry``), in-process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REGISTRY_TOKEN
from tests.servers import valor_server
from tests.waiting import wait_for
from valor.runtime import Runtime
from valor.server import SERVER_LOADERS
from valor.store.sqlite import SqliteBackend
from valor.testing import TestClient

pytestmark = pytest.mark.timeout(60)

TOKEN = {"authorization": "Bearer t"}
HELLO = "from valor import vlugin\n@vlugin\ndef hello(req):\n    return 'hi'\n"


def manifest(folder: Path) -> Path:
    (folder / "hello.py").write_text(HELLO)
    path = folder / "plugins.json"
    entries = [{"name": "hello", "type": "python", "path": "hello.py"}]
    path.write_text(json.dumps({"plugins": entries}))
    return path


def test_a_change_the_store_cannot_record_is_not_made(tmp_path: Path) -> None:
    backend = SqliteBackend(tmp_path / "missing" / "store.sqlite3")
    runtime = Runtime(SERVER_LOADERS, registry=True, registry_token="t", store=backend)
    definition = {"name": "again", "type": "python", "path": "hello.py"}
    with TestClient(runtime, manifest(tmp_path)) as http:
        posted = http.post("/_plugins", json=definition, headers=TOKEN)
        assert posted.status_code == 503, posted.text
        assert posted.json()["store"] == backend.description
        assert http.get("/again").status_code == 404
        deleted = http.delete("/_plugins/hello", headers=TOKEN)
        assert deleted.status_code == 503
        assert http.get("/hello").text == "hi"
        (tmp_path / "missing").mkdir()
        assert http.post("/_plugins", json=definition, headers=TOKEN).status_code == 201
        assert http.get("/again").text == "hi"


def test_two_runtimes_on_one_store_follow_each_other(tmp_path: Path) -> None:
    path, store = manifest(tmp_path), tmp_path / "store.sqlite3"

    def runtime() -> Runtime:  # as two worker processes would open the file
        return Runtime(
            SERVER_LOADERS, registry=True, registry_token="t", store=SqliteBackend(store)
        )

    definition = {"name": "again", "type": "python", "path": "hello.py"}
    with TestClient(runtime(), path) as one, TestClient(runtime(), path) as two:
        assert one.post("/_plugins", json=definition, headers=TOKEN).status_code == 201
        wait_for(lambda: two.get("/again").status_code == 200, 30)
        assert two.delete("/_plugins/hello", headers=TOKEN).status_code == 200
        wait_for(lambda: one.get("/hello").status_code == 404, 30)


def valor_registry(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``valor registry ARGS`` in a process of its own, as a user runs it."""
    command = [sys.executable, "-m", "valor.cli", "registry", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=60)


@pytest.mark.timeout(180)
def test_valor_registry_reset_goes_back_to_the_manifest(tmp_path: Path) -> None:
    path = manifest(tmp_path)
    (tmp_path / "added.py").write_text(HELLO.replace("hi", "added"))
    # The default store, beside the manifest: what `valor registry` opens without --store.
    store = ("--store", str(tmp_path / "valor-store.sqlite3"), "--registry")
    env = {"VALOR_TOKEN": "t"}
    definition = {"name": "added", "type": "python", "path": "added.py"}
    with valor_server(path, *store, log_dir=tmp_path, env=env) as server:
        posted = httpx.post(server.url + "/_plugins", json=definition, headers=TOKEN)
        assert posted.status_code == 201, posted.text
        assert httpx.delete(server.url + "/_plugins/hello", headers=TOKEN).status_code == 200
        shown = valor_registry("show", str(path), cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout) == {
            "store": f"sqlite:///{tmp_path}/valor-store.sqlite3",
            "added": {"added": definition},
            "removed": ["hello"],
        }
        reset = valor_registry("reset", "--store", "valor-store.sqlite3", cwd=tmp_path)
        assert reset.returncode == 0, reset.stderr
        assert "forgot 1 added (added) and 1 removed (hello)" in reset.stdout
        # The running server follows: the added plug-in goes within a second or so.
        wait_for(lambda: httpx.get(server.url + "/added").status_code == 404, 30)
    shown = valor_registry("show", str(path), cwd=tmp_path)
    assert json.loads(shown.stdout)["added"] == {} and json.loads(shown.stdout)["removed"] == []
    # Started again on the same store: the manifest alone, the removed plug-in back.
    with valor_server(path, *store, log_dir=tmp_path, env=env) as again:
        assert httpx.get(again.url + "/hello").text == "hi"
        assert httpx.get(again.url + "/added").status_code == 404
        assert (
            httpx.post(again.url + "/_plugins", json=definition, headers=TOKEN).status_code == 201
        )


def test_valor_registry_names_a_store_it_cannot_reach(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path}/missing/store.sqlite3"
    for action in ("show", "reset"):
        answer = valor_registry(action, "--store", missing, cwd=tmp_path)
        assert answer.returncode == 1
        assert f"store {missing!r} is unavailable" in answer.stderr
    answer = valor_registry("reset", str(tmp_path / "nothing.json"), cwd=tmp_path)
    assert answer.returncode == 1 and "cannot read manifest" in answer.stderr


PACKAGE_PLUGINS = {
    "python": (
        "from valor import vlugin\n\nfrom .helper import WORD\n\n\n"
        "@vlugin\ndef hello(req):\n    return WORD\n"
    ),
    "asgi": (
        "from .helper import WORD\n\n\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': WORD.encode()})\n"
    ),
}


@pytest.mark.parametrize("kind", ["python", "asgi", "python beside"])
def test_a_package_plugin_added_again_runs_its_changed_modules(tmp_path: Path, kind: str) -> None:
    # A plug-in in a package, removed and added again after its helper module changed, runs
    # the new helper: its package's modules are not kept from the first load (issue 23). The
    # same for a plug-in file with a helper module beside it ("python beside").
    package = tmp_path / "shop"
    package.mkdir()
    if kind == "python beside":
        source = PACKAGE_PLUGINS["python"].replace("from .helper", "from helper")
        (package / "main.py").write_text(source)
        kind = "python"
    else:
        (package / "__init__.py").write_text("")
        (package / "main.py").write_text(PACKAGE_PLUGINS[kind])
    (package / "helper.py").write_text("WORD = 'first'\n")
    definition = {"name": "shop", "type": kind, "path": "shop/main.py"}
    (tmp_path / "plugins.json").write_text(json.dumps({"plugins": [definition]}))
    auth = {"authorization": f"Bearer {REGISTRY_TOKEN}"}
    env = {"VALOR_TOKEN": REGISTRY_TOKEN}
    with valor_server(tmp_path / "plugins.json", "--registry", log_dir=tmp_path, env=env) as server:
        assert httpx.get(server.url + "/shop").text == "first"
        (package / "helper.py").write_text("WORD = 'the second'\n")  # another size: a new .pyc
        removed = httpx.delete(server.url + "/_plugins/shop", headers=auth)
        assert removed.status_code == 200, removed.text
        added = httpx.post(server.url + "/_plugins", json=definition, headers=auth)
        assert added.status_code == 201, added.text
        assert httpx.get(server.url + "/shop").text == "the second"
