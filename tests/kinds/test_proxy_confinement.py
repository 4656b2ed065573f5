"""A proxy mounted with an upstream path reaches nothing outside it, and relays no more of an
answer than its limit: a real client and a real upstream on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.servers import Server, valor_server
from valor.kinds.proxy.rules import UnsafePath, confined_path, upstream_url


@pytest.fixture(scope="module")
def proxied(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("proxy")
    manifest = folder / "plugins.json"
    plugin = {"name": "px", "type": "proxy", "url": upstream + "/v1"}
    plugin["limits"] = {"response_bytes": 2**20}
    manifest.write_text(json.dumps({"plugins": [plugin]}))
    with valor_server(manifest, log_dir=folder) as running:
        yield running


def raw_get(server: Server, target: str) -> tuple[int, bytes]:
    """A GET with the request target exactly as given (clients normalise dot segments)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    "target", ["/px/../admin", "/px/%2e%2e/admin", "/px/..%2fadmin", "/px/a/../../admin"]
)
def test_a_path_that_climbs_out_of_the_upstream_path_is_refused(
    proxied: Server, target: str
) -> None:
    status, body = raw_get(proxied, target)
    assert status == 400
    assert "plug-in 'px': the path" in json.loads(body)["detail"]


def test_paths_inside_the_upstream_path_are_resolved_and_forwarded(proxied: Server) -> None:
    assert raw_get(proxied, "/px/a/./b/../c?q=1") == (200, b"/v1/a/c?q=1")
    assert raw_get(proxied, "/px/") == (200, b"/v1/?")


def test_an_upstream_answer_past_the_limit_is_502_and_streamed_no_further(
    proxied: Server,
) -> None:
    answer = httpx.get(proxied.url + "/px/huge", timeout=30)
    assert answer.status_code == 502
    assert answer.json()["detail"].endswith("larger than the limit of 1048576 bytes")
    assert answer.headers["x-correlation-id"]


def test_confined_path() -> None:
    assert confined_path("/") == "/"
    assert confined_path("/a/b/") == "/a/b/"
    assert confined_path("/a/..") == "/"
    assert confined_path("/a/%2E/b") == "/a/b"
    for path in ("/..", "/%2e%2E", "/a/../..", "/a%2fb", "/a%5Cb", "/a\\b"):
        with pytest.raises(UnsafePath):
            confined_path(path)


def test_an_encoded_question_mark_stays_in_the_path() -> None:
    # With the raw request target in the URL, "%3F" is data, not the start of a query.
    target = upstream_url("http://up:1/v1", "http://me/a%3Fsecret=1")
    assert target == "http://up:1/v1/a%3Fsecret=1"
