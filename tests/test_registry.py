"""The registry's changes kept in the store (``valor.registry``), in-process."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

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
        wait_for(lambda: two.get("/again").status_code == 200)
        assert two.delete("/_plugins/hello", headers=TOKEN).status_code == 200
        wait_for(lambda: one.get("/hello").status_code == 404)


def wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        time.sleep(0.02)
