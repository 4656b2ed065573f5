"""The server host over real HTTP: a uvicorn process serving ``plugins/plugins.json``."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests.cases import run_cases
from tests.conftest import REGISTRY_TOKEN
from tests.servers import MANIFEST, Server, http_send, valor_server
from tests.waiting import wait_for
from valor import asgi_http as host

AUTH = {"authorization": f"Bearer {REGISTRY_TOKEN}"}


def test_shared_table(server: Server) -> None:
    run_cases(http_send(server.url))


def test_access_log_names_plugin_status_method_path_time_and_id(server: Server) -> None:
    httpx.get(server.url + "/greeter?who=Ann", headers={"x-request-id": "log-me-123"})
    deadline = time.monotonic() + 5
    while "log-me-123" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(line for line in server.log().splitlines() if "log-me-123" in line)
    assert "valor.access: greeter 200 GET /greeter" in line
    assert "ms log-me-123" in line


def test_generated_request_ids_are_unique(server: Server) -> None:
    ids = {httpx.get(server.url + "/hello").headers["x-correlation-id"] for _ in range(5)}
    assert len(ids) == 5


def test_notes_delete_then_gone(server: Server) -> None:
    created = httpx.post(server.url + "/notes", json={"text": "temporary"})
    assert created.status_code == 201
    location = created.headers["location"]
    assert httpx.delete(server.url + location).status_code == 204
    gone = httpx.get(server.url + location)
    assert gone.status_code == 404
    assert "no note with id" in gone.json()["detail"]


def test_body_over_the_limit_is_413_and_server_keeps_serving(tmp_path: Path) -> None:
    with valor_server("plugins/plugins.json", "--max-body-size", "1024", log_dir=tmp_path) as small:
        too_big = httpx.post(small.url + "/echo", content=b"x" * 2048)
        assert too_big.status_code == 413
        assert "larger than the limit of 1024 bytes" in too_big.json()["detail"]
        assert too_big.headers["x-correlation-id"]
        # Without a content-length, the limit applies while reading the stream.
        chunks = (b"y" * 512 for _ in range(4))
        streamed = httpx.post(small.url + "/echo", content=chunks)
        assert streamed.status_code == 413
        fits = httpx.post(small.url + "/echo", content=b"z" * 1000)
        assert fits.status_code == 200 and fits.content == b"z" * 1000


def test_hanging_plugin_does_not_stall_others(server: Server) -> None:
    results: dict[str, int] = {}
    hang = threading.Thread(
        target=lambda: results.update(hang=httpx.get(server.url + "/faulty/hang").status_code)
    )
    hang.start()
    time.sleep(0.2)
    assert httpx.get(server.url + "/hello").status_code == 200
    assert "hang" not in results  # answered while the hanging request still waits
    hang.join()
    assert results["hang"] == 504


def test_slow_sync_handler_runs_off_the_event_loop(tmp_path: Path) -> None:
    # The slow handler says it has started, then blocks its thread until the test lets it go.
    started, release = tmp_path / "started", tmp_path / "release"
    (tmp_path / "slow.py").write_text(
        "import time\nfrom pathlib import Path\nfrom valor import vlugin\n\n"
        "@vlugin\ndef on_request(req):\n"
        f"    Path({str(started)!r}).touch()\n"
        "    deadline = time.monotonic() + 30\n"
        f"    while not Path({str(release)!r}).exists() and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    return 'slow'\n"
    )
    (tmp_path / "fast.py").write_text(
        "from valor import vlugin\n\n@vlugin\ndef on_request(req):\n    return 'fast'\n"
    )
    manifest = tmp_path / "plugins.json"
    manifest.write_text(
        json.dumps(
            {
                "plugins": [
                    {"name": "slow", "type": "python", "path": "slow.py"},
                    {"name": "fast", "type": "python", "path": "fast.py"},
                ]
            }
        )
    )
    with valor_server(manifest, log_dir=tmp_path) as running:
        answers: list[str] = []
        slow = threading.Thread(
            target=lambda: answers.append(httpx.get(running.url + "/slow", timeout=40).text)
        )
        slow.start()
        wait_for(started.exists, 20, "the slow handler's start")
        # Were the handler on the event loop, this could not be answered before the release.
        assert httpx.get(running.url + "/fast", timeout=10).text == "fast"
        release.touch()
        slow.join(timeout=40)
        assert answers == ["slow"]


class TestRegistry:
    def test_requires_the_bearer_token(self, server: Server) -> None:
        assert httpx.get(server.url + "/_plugins").status_code == 401
        wrong = httpx.get(server.url + "/_plugins", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"

    def test_lists_definitions(self, server: Server) -> None:
        listed = httpx.get(server.url + "/_plugins", headers=AUTH).json()["plugins"]
        greeter = next(p for p in listed if p["name"] == "greeter")
        assert greeter == {
            "name": "greeter",
            "type": "python",
            "path": "greeter.py",
            "config": {"name": "Alice"},
            "prefix": "/greeter",
        }

    def test_add_use_and_remove(self, server: Server) -> None:
        definition = {
            "name": "greeter2",
            "type": "python",
            "path": "greeter.py",
            "prefix": "/hi",
            "config": {"name": "Zed"},
        }
        added = httpx.post(server.url + "/_plugins", json=definition, headers=AUTH)
        assert added.status_code == 201, added.text
        answer = httpx.get(server.url + "/hi?who=Amy")
        assert answer.text == "Zed says hello Amy!"
        assert answer.headers["x-valor-plugin"] == "greeter2"
        removed = httpx.delete(server.url + "/_plugins/greeter2", headers=AUTH)
        assert removed.status_code == 200
        assert httpx.get(server.url + "/hi?who=Amy").status_code == 404
        missing = httpx.delete(server.url + "/_plugins/greeter2", headers=AUTH)
        assert missing.status_code == 404

    @pytest.mark.parametrize(
        ("definition", "status", "field"),
        [
            ({"name": "hello", "type": "python", "path": "hello.py", "prefix": "/h2"}, 409, "name"),
            (
                {"name": "h2", "type": "python", "path": "hello.py", "prefix": "/hello"},
                409,
                "prefix",
            ),
            ({"name": "h3", "type": "cobol", "path": "hello.py"}, 400, "type"),
            ({"name": "h4", "type": "python"}, 400, "path"),
            ({"name": "", "type": "python", "path": "hello.py"}, 400, "name"),
            ({"name": "h5", "type": "python", "path": "hello.py", "config": []}, 400, "config"),
            ({"name": "h6", "type": "python", "path": "../tests/conftest.py"}, 400, "path"),
            ({"name": "h7", "type": "python", "path": "/etc/passwd"}, 400, "path"),
            ({"name": "h8", "type": "python", "path": "missing.py"}, 400, "path"),
            (
                {"name": "h9", "type": "python", "path": "hello.py", "prefix": "/_health"},
                400,
                "prefix",
            ),
        ],
    )
    def test_rejects_bad_definitions(
        self, server: Server, definition: dict, status: int, field: str
    ) -> None:
        before = httpx.get(server.url + "/_plugins", headers=AUTH).json()
        answer = httpx.post(server.url + "/_plugins", json=definition, headers=AUTH)
        assert answer.status_code == status, answer.text
        assert answer.json()["field"] == field
        assert repr(field) in answer.json()["detail"] or field in answer.json()["detail"]
        assert httpx.get(server.url + "/_plugins", headers=AUTH).json() == before

    def test_rejects_symlink_escape(self, server: Server, tmp_path: Path) -> None:
        outside = tmp_path / "evil.py"
        outside.write_text(
            "from valor import vlugin\n@vlugin\ndef on_request(r):\n    return 'x'\n"
        )
        link = Path("plugins") / "evil_link.py"
        os.symlink(outside, link)
        try:
            answer = httpx.post(
                server.url + "/_plugins",
                json={"name": "evil", "type": "python", "path": "evil_link.py"},
                headers=AUTH,
            )
        finally:
            link.unlink()
        assert answer.status_code == 400
        assert "inside the manifest's folder" in answer.json()["detail"]

    def test_bad_json_body(self, server: Server) -> None:
        answer = httpx.post(server.url + "/_plugins", content=b"{", headers=AUTH)
        assert answer.status_code == 400
        assert "not valid JSON" in answer.json()["detail"]

    def test_registry_off_by_default(self, tmp_path: Path) -> None:
        with valor_server("plugins/plugins.json", log_dir=tmp_path) as plain:
            answer = httpx.get(plain.url + "/_plugins")
            assert answer.status_code == 404
            assert "registry is not enabled" in answer.json()["detail"]


class TestManifestAtStartup:
    def test_a_broken_plugin_is_reported_and_the_others_load(self, tmp_path: Path) -> None:
        (tmp_path / "ok.py").write_text(
            "from valor import vlugin\n@vlugin\ndef on_request(r):\n    return 'ok'\n"
        )
        (tmp_path / "broken.py").write_text("def on_request(:\n")
        manifest = tmp_path / "plugins.json"
        manifest.write_text(
            json.dumps(
                {
                    "plugins": [
                        {"name": "broken", "type": "python", "path": "broken.py"},
                        {"name": "ok", "type": "python", "path": "ok.py"},
                    ]
                }
            )
        )
        with valor_server(manifest, log_dir=tmp_path) as running:
            assert httpx.get(running.url + "/ok").text == "ok"
            broken = httpx.get(running.url + "/broken")
            assert broken.status_code == 503  # its failure, named, where it would answer
            assert "plug-in 'broken' failed to load: syntax error" in broken.json()["detail"]
            health = httpx.get(running.url + "/_health").json()
            assert [entry["name"] for entry in health["failed"]] == ["broken"]
            assert "plug-in 'broken' failed to load: syntax error" in running.log()

        with (
            pytest.raises(RuntimeError, match="plug-in 'broken' failed to load"),
            valor_server(manifest, "--strict", log_dir=tmp_path),
        ):
            pass

    def test_an_invalid_manifest_names_the_plugin_and_field(self, tmp_path: Path) -> None:
        manifest = tmp_path / "plugins.json"
        manifest.write_text(json.dumps({"plugins": [{"name": "x", "type": "python"}]}))
        with (
            pytest.raises(RuntimeError, match="plug-in 'x': 'path' is required"),
            valor_server(manifest, log_dir=tmp_path, startup=10),
        ):
            pass

    def test_a_missing_manifest_is_a_clear_error(self, tmp_path: Path) -> None:
        with (
            pytest.raises(RuntimeError, match="manifest not found"),
            valor_server(tmp_path / "nope.json", log_dir=tmp_path, startup=10),
        ):
            pass


def test_reload_picks_up_an_edited_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "live.py"
    plugin.write_text("from valor import vlugin\n@vlugin\ndef on_request(req):\n    return 'v1'\n")
    manifest = tmp_path / "plugins.json"
    manifest.write_text(
        json.dumps({"plugins": [{"name": "live", "type": "python", "path": "live.py"}]})
    )
    with valor_server(manifest, "--reload", log_dir=tmp_path) as running:
        assert httpx.get(running.url + "/live").text == "v1"
        deadline = time.monotonic() + 20
        answer = ""
        while answer != "v2" and time.monotonic() < deadline:
            # Rewritten each round: the watcher may not be watching yet right after start-up.
            plugin.write_text(plugin.read_text().replace("v1", "v2"))
            time.sleep(0.5)
            with contextlib.suppress(httpx.TransportError):  # restarting
                answer = httpx.get(running.url + "/live", timeout=2).text
        assert answer == "v2"


@pytest.mark.anyio
async def test_create_app_works_without_lifespan_in_process() -> None:
    from valor.server import create_app

    app = create_app(MANIFEST)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answer = await client.get("/greeter", params={"who": "Eve"})
    assert answer.text == "Alice says hello Eve!"
    assert answer.headers["x-valor-plugin"] == "greeter"
    await app.runtime.close()


def test_answers_become_asgi_events_with_lower_case_names_and_our_own_framing() -> None:
    answer = {
        "status": 201,
        "headers": [
            ["Content-Type", "text/plain"],
            ["X-Thing", "1"],
            ["Content-Length", "999"],
            ["Transfer-Encoding", "chunked"],
            ["connection", "close"],
            ["x-thing", "2"],
        ],
        "body": b"created",
    }
    start, body = host.response_events(answer)
    assert start == {
        "type": "http.response.start",
        "status": 201,
        "headers": [
            (b"content-type", b"text/plain"),
            (b"x-thing", b"1"),
            (b"x-thing", b"2"),
            (b"x-valor-host", b"server"),
            (b"content-length", b"7"),
        ],
    }
    assert body == {"type": "http.response.body", "body": b"created"}


def test_the_header_name_cache_stops_growing_at_its_bound() -> None:
    many = [[f"x-made-up-{n}", "v"] for n in range(host._NAMES_MAX + 10)]
    start, _ = host.response_events({"status": 200, "headers": many, "body": b""})
    assert len(start["headers"]) == len(many) + 2  # every one sent, x-valor-host, content-length
    assert len(host._names) <= host._NAMES_MAX


def test_create_app_serves_valor_manifest_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """So that ``uvicorn --factory valor.server:create_app`` is the whole command."""
    from valor.server import create_app

    monkeypatch.setenv("VALOR_MANIFEST", "elsewhere/plugins.json")
    assert create_app().manifest_path == "elsewhere/plugins.json"
    monkeypatch.delenv("VALOR_MANIFEST")
    assert create_app().manifest_path == "plugins/plugins.json"
    assert create_app(MANIFEST).manifest_path == MANIFEST


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("raw_path", "query"),
    [
        (b"/echo/a", b""),
        (b"/echo/a", b"b=1&c"),
        (b"/echo/a%20b", b"q=%23"),
        (b"/echo/a#frag", b""),
        (b"/echo/a", b"b=1#frag"),
        (b"/echo/a?b", b"c"),
        (b"*", b""),
    ],
)
async def test_the_usual_request_hands_the_runtime_the_url_it_would_split(
    tmp_path: Path, raw_path: bytes, query: bytes
) -> None:
    # The usual request (each header once) gives the runtime its URL's parts; a repeated
    # header takes the other way, which only splits the URL: the answers are the same.
    from valor.server import create_app

    (tmp_path / "echo.py").write_text(
        "from valor import vlugin\n@vlugin\ndef on_request(req):\n    return req.url\n"
    )
    (tmp_path / "plugins.json").write_text(
        json.dumps({"plugins": [{"name": "echo", "type": "python", "path": "echo.py"}]})
    )
    app = create_app(tmp_path / "plugins.json", store="memory:")
    answers = []
    for extra in ([], [(b"x-a", b"1"), (b"x-a", b"2")]) * 2:  # the first learns the origin
        scope = {
            "type": "http",
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": raw_path.decode(),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", b"example.com"), (b"x-request-id", b"r"), *extra],
            "client": ("127.0.0.1", 1),
        }
        sent = await _events(app, scope)
        answers.append([(e.get("status"), e.get("headers"), e.get("body")) for e in sent])
    await app.runtime.close()
    assert answers[2] == answers[1] == answers[3]


async def _events(app: Any, scope: dict[str, Any]) -> list[dict[str, Any]]:
    """The events an ASGI app sends for one request without a body."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)

    await app(scope, receive, send)
    return sent


def test_servers_take_the_app_for_an_asgi_3_app() -> None:
    """The app's ``__call__`` hands back a coroutine without being a coroutine function (one
    coroutine less per request): it is marked as one, so that uvicorn (and any server that
    asks ``iscoroutinefunction``) calls it as an ASGI 3 app, not an ASGI 2 one."""
    from valor.server import create_app

    app = create_app(MANIFEST)
    assert asyncio.iscoroutinefunction(app.__call__)
    if hasattr(inspect, "markcoroutinefunction"):
        assert inspect.iscoroutinefunction(app.__call__)
    config = uvicorn.Config(app)
    config.load()
    assert config.interface == "asgi3"
