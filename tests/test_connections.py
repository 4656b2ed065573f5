"""Hostile connections against a real ``valor serve`` on 127.0.0.1: idle, slow and oversized
clients cost a bounded amount and never stop the server answering others."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import MANIFEST, Server, valor_server

TOKEN = "connections-token"


@pytest.fixture(scope="module", params=["auto", "h11"])
def strict_timeouts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    # Every limit on both protocols: the default (httptools) and h11.
    with valor_server(
        MANIFEST,
        "--http",
        request.param,
        "--registry",
        "--timeout-headers",
        "1",
        "--timeout-body",
        "1",
        log_dir=tmp_path_factory.mktemp("connections"),
        env={"VALOR_TOKEN": TOKEN},
    ) as running:
        yield running


def connect(server: Server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_request_head_that_never_ends_is_closed(strict_timeouts: Server) -> None:
    for sent in (b"", b"GET /hello HTTP/1.1\r\nHost: x\r\n"):  # silent, then slowloris
        sock = connect(strict_timeouts)
        sock.sendall(sent)
        started = time.monotonic()
        assert read_all(sock) == b""  # closed by the server, no answer
        assert time.monotonic() - started < 8  # not never
        sock.close()


def test_a_pipelined_request_is_answered_and_then_the_head_limit_applies(
    strict_timeouts: Server,
) -> None:
    sock = connect(strict_timeouts)
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n" * 2 + b"GET /hello HTTP/1.1\r\n")
    started = time.monotonic()
    answer = read_all(sock)  # two answers, then closed while the third head never ends
    assert answer.count(b"HTTP/1.1 200 ") == 2
    assert time.monotonic() - started < 8
    sock.close()


def test_a_request_head_past_16_kib_is_refused_and_others_are_answered(
    strict_timeouts: Server,
) -> None:
    sock = connect(strict_timeouts)
    # 20 KiB of a head that goes on: refused before the 1 s head time limit would close it.
    sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"x-filler: abcdefgh\r\n" * 1000)
    answer = read_all(sock)
    sock.close()
    # h11 answers 400 past its 16 KiB; httptools has no limit of its own: Valor answers 431.
    assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")), answer[:80]
    if answer.startswith(b"HTTP/1.1 431 "):
        assert b"larger than the limit of 16384 bytes" in answer
    assert httpx.get(strict_timeouts.url + "/hello").status_code == 200


def test_a_body_that_stops_arriving_answers_408(strict_timeouts: Server) -> None:
    sock = connect(strict_timeouts)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    started = time.monotonic()
    answer = read_all(sock)
    assert time.monotonic() - started < 8  # not never
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ")
    assert b"x-correlation-id: " in head
    assert b"the request body stopped arriving for 1 seconds" in body
    sock.close()


@pytest.mark.parametrize(
    ("target", "status"),
    [("/nowhere", 404), ("/_plugins", 401), ("/_health", 200)],
)
def test_bodies_are_not_read_for_requests_nobody_takes(
    strict_timeouts: Server, target: str, status: int
) -> None:
    # The body is announced but never sent: an answer at once shows it was not waited for.
    sock = connect(strict_timeouts)
    sock.sendall(f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n".encode())
    head = read_all(sock).partition(b"\r\n\r\n")[0]
    # Waiting for the body would have answered 408 when the body timeout passed.
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    assert b"connection: close" in head.lower()
    sock.close()


def test_the_registry_reads_a_body_after_its_login(strict_timeouts: Server) -> None:
    answer = httpx.post(
        strict_timeouts.url + "/_plugins",
        headers={"authorization": f"Bearer {TOKEN}"},
        content=b"{",
    )
    assert answer.status_code == 400
    assert "not valid JSON" in answer.json()["detail"]


def test_idle_sockets_at_the_open_file_limit_do_not_stop_the_server(tmp_path: Path) -> None:
    with valor_server(
        MANIFEST,
        "--timeout-headers",
        "2",
        "--limit-concurrency",
        "1000",
        log_dir=tmp_path,
        open_files=128,
    ) as running:
        idle = [connect(running) for _ in range(200)]
        try:
            answered = None
            deadline = time.monotonic() + 15
            while answered is None and time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    answered = httpx.get(running.url + "/hello", timeout=2).status_code
            assert answered == 200
        finally:
            for sock in idle:
                sock.close()
        lines = running.log().splitlines()
        assert sum("Too many open files" in line for line in lines) <= 2
        assert len(lines) < 100
