"""Apps as their authors wrote them, on a real ``valor serve``: the root path a proxy serves
them under, the client's own headers (repeated ones apart), the real peer, errors after the
answer. Each on both of the server's paths to an app: the pass-through and the wire message
(``VALOR_PASSTHROUGH=0``, the path the browser host takes). The answers of both hosts are
compared in full by the shared table (``tests/cases.py``, ``tests/browser/test_asgi.py``)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient as StarletteClient

from tests.servers import ASGI_MANIFEST, Server, valor_server
from valor.server import create_app

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module", params=["passthrough", "message"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``valor serve plugins/asgi.json --root-path /api``, as behind a proxy that strips
    ``/api``; on each of the server's paths to an app."""
    env = {"VALOR_PASSTHROUGH": "0"} if request.param == "message" else {}
    log_dir = tmp_path_factory.mktemp("apps")
    with valor_server(ASGI_MANIFEST, "--root-path", "/api", log_dir=log_dir, env=env) as running:
        yield running


def test_the_root_path_is_part_of_every_apps_root_path(server: Server) -> None:
    hello = httpx.get(server.url + "/readinglist/", timeout=10)
    assert hello.json() == {"hello": "readers", "root_path": "/api/readinglist",
                            "client": "127.0.0.1"}  # fmt: skip
    openapi = httpx.get(server.url + "/readinglist/openapi.json", timeout=10)
    assert openapi.json()["servers"] == [{"url": "/api/readinglist"}]
    where = httpx.get(server.url + "/board/where", timeout=10).json()
    assert where["root_path"] == "/api/board", where
    echo = httpx.post(server.url + "/board/echo", json={"a": 1}, timeout=10)
    assert echo.headers["location"].endswith("/api/board/posts/1"), echo.headers


def test_repeated_request_headers_reach_the_app_apart(server: Server) -> None:
    headers = [("x-token", "foo"), ("x-token", "bar"), ("x-request-id", "twice")]
    answer = httpx.get(server.url + "/readinglist/headers", headers=headers, timeout=10)
    assert answer.json() == {
        "x_token": ["foo", "bar"],
        "x-request-id": "twice",
        "x-forwarded-prefix": None,
        "valor": {"request_id": "twice"},
    }
    assert answer.headers["x-correlation-id"] == "twice"


def test_an_error_after_the_answer_is_logged_with_an_error_id(server: Server) -> None:
    answer = httpx.get(server.url + "/readinglist/after", timeout=10)
    assert answer.status_code == 200 and answer.json() == {"answered": True}
    pattern = (
        r"plug-in 'readinglist' failed after its answer: RuntimeError: the background task "
        r"failed at readinglist/main\.py:\d+ \[error_id=[0-9a-f]{12}\]\nTraceback"
    )
    deadline = time.monotonic() + 30
    while not re.search(pattern, server.log()):  # the task ends after the answer
        assert time.monotonic() < deadline, server.log()[-3000:]
        time.sleep(0.05)
    assert "Task exception was never retrieved" not in server.log()


PREFIX_PLUGIN = """
def onmessage(event):
    prefix = dict(event.data["headers"])["x-forwarded-prefix"]
    postMessage({"status": 200, "body": prefix})  # noqa: F821
"""


def test_a_test_clients_root_path_reaches_every_plugin(tmp_path: Path) -> None:
    # Starlette's TestClient gives its root_path in the scope, as uvicorn's --root-path does;
    # create_app(root_path=) is the same for a server that gives none.
    with StarletteClient(create_app(ASGI_MANIFEST), root_path="/api") as client:
        assert client.get("/readinglist/").json()["root_path"] == "/api/readinglist"
    (tmp_path / "prefix.py").write_text(PREFIX_PLUGIN)
    (tmp_path / "plugins.json").write_text(
        json.dumps({"plugins": [{"name": "prefix", "type": "python", "path": "prefix.py"}]})
    )
    with StarletteClient(create_app(tmp_path / "plugins.json", root_path="/api")) as client:
        assert client.get("/prefix/x").text == "/api/prefix"
    with StarletteClient(create_app(tmp_path / "plugins.json"), root_path="/v1") as client:
        assert client.get("/prefix/x").text == "/v1/prefix"
