"""Hostile requests and careless operators against a real ``valor serve`` on 127.0.0.1: every
error is the runtime's JSON, nothing a client sends reaches the log as a line of its own or a
plug-in's links, and secrets stay out of argv and helper processes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import REGISTRY_TOKEN
from tests.servers import MANIFEST, Server, valor_server

AUTH = {"authorization": f"Bearer {REGISTRY_TOKEN}"}


def test_a_client_forwarded_prefix_does_not_make_an_open_redirect(server: Server) -> None:
    created = httpx.post(
        server.url + "/notes",
        json={"text": "phish"},
        headers={"x-forwarded-prefix": "https://evil.example/phish"},
    )
    assert created.status_code == 201
    assert created.headers["location"] == f"/notes/{created.json()['id']}"


def test_a_nul_in_a_registry_path_is_a_json_400(server: Server) -> None:
    answer = httpx.post(
        server.url + "/_plugins",
        headers=AUTH,
        json={"name": "nul", "type": "python", "path": "hello.py\x00.txt"},
    )
    assert answer.status_code == 400
    assert answer.json()["field"] == "path"
    assert "NUL" in answer.json()["detail"]
    assert answer.headers["x-correlation-id"]


def test_deeply_nested_json_to_the_registry_is_a_json_400(server: Server) -> None:
    answer = httpx.post(
        server.url + "/_plugins", headers=AUTH, content=b"[" * 50_000 + b"]" * 50_000
    )
    assert answer.status_code == 400
    assert answer.json()["detail"] == "the plug-in definition is nested too deeply"
    assert answer.headers["x-correlation-id"]


def test_control_characters_in_a_path_cannot_forge_access_log_lines(server: Server) -> None:
    forged = "2001-01-01 00:00:00,000 INFO valor.access: admin 200 GET /admin 1.0ms forged"
    httpx.get(server.url + "/hello/x%0d%0a" + forged.replace(" ", "%20"))
    httpx.get(server.url + "/hello", headers={"x-request-id": "after-forgery"})
    deadline = time.monotonic() + 5
    while "after-forgery" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = server.log().splitlines()
    assert not [line for line in lines if line.startswith("2001-01-01")]
    # The access line shows the path as it was sent, still percent-encoded.
    assert [line for line in lines if "/hello/x%0d%0a2001-01-01" in line]


def test_example_note_ids_count_up(server: Server) -> None:
    # Ids come from the store's counter, shared by every process using the store.
    ids = [httpx.post(server.url + "/notes", json={"text": "n"}).json()["id"] for _ in range(20)]
    assert ids == list(range(ids[0], ids[0] + 20))


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def test_helper_processes_do_not_inherit_the_token(server: Server) -> None:
    assert environment_of(server.process.pid)["VALOR_TOKEN"] == REGISTRY_TOKEN
    helpers = children_of(server.process.pid)  # Deno (js), the native child
    assert len(helpers) >= 2
    for pid in helpers:
        environment = environment_of(pid)
        assert not [name for name in environment if name.startswith("VALOR_")], environment


def test_the_token_can_come_from_a_file_and_stays_out_of_argv(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-a-file\n")
    with valor_server(
        MANIFEST, "--registry", "--token-file", str(token_file), log_dir=tmp_path
    ) as running:
        auth = {"authorization": "Bearer from-a-file"}
        assert httpx.get(running.url + "/_plugins", headers=auth).status_code == 200
        assert httpx.get(running.url + "/_plugins", headers=AUTH).status_code == 401
        argv = Path(f"/proc/{running.process.pid}/cmdline").read_bytes()
        assert b"from-a-file" not in argv
        assert "from-a-file" not in running.log()


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("field", "definition"),
    [
        ("name", {"name": "nl\n", "type": "python", "path": "hello.py"}),
        ("name", {"name": "cr\r", "type": "python", "path": "hello.py"}),
        ("prefix", {"name": "crlf", "type": "python", "path": "hello.py", "prefix": "/a\r\nb"}),
        ("prefix", {"name": "tab", "type": "python", "path": "hello.py", "prefix": "/a\tb"}),
        ("prefix", {"name": "del", "type": "python", "path": "hello.py", "prefix": "/a\x7f"}),
    ],
)
def test_control_characters_in_a_registered_name_or_prefix_are_a_json_400(
    server: Server, field: str, definition: dict
) -> None:
    answer = httpx.post(server.url + "/_plugins", headers=AUTH, json=definition)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field
    assert answer.headers["x-correlation-id"]
    listed = httpx.get(server.url + "/_plugins", headers=AUTH).json()["plugins"]
    assert definition["name"] not in [plugin["name"] for plugin in listed]
    assert httpx.get(server.url + "/hello").status_code == 200
