"""Real hosts for tests: a uvicorn process running ``valor serve`` on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.cases import Answer, Case
from valor.headers import Headers
from valor.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "plugins" / "plugins.json"
PARITY_MANIFEST = ROOT / "tests" / "parity" / "plugins" / "plugins.json"
ASGI_MANIFEST = ROOT / "plugins" / "asgi.json"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text()


def http_answer(response: httpx.Response) -> Answer:
    """An httpx response as the table compares it: every header as sent, in order."""
    pairs = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in response.headers.raw]
    return Answer(response.status_code, Headers(pairs), response.content, response.reason_phrase)


def http_send(base_url: str):
    """A ``send`` for the shared request table, over HTTP with httpx."""
    client = httpx.Client(base_url=base_url, timeout=10)

    def send(case: Case) -> Answer:
        response = client.request(case.method, case.path, headers=case.headers, content=case.body)
        return http_answer(response)

    return send


def raw_request(url: str, request: bytes, timeout: float = 10) -> tuple[str, list[str], bytes]:
    """Send ``request`` byte for byte (``Connection: close``) to the server at ``url``; return
    the status line, the header lines and the body, as a client that trusts nothing would."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(request)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    return status_line, header_lines, body


@contextmanager
def valor_server(
    manifest: Path | str = MANIFEST,
    *args: str,
    log_dir: Path,
    startup: float = 30.0,
    env: dict[str, str] | None = None,
    open_files: int | None = None,
) -> Iterator[Server]:
    """Run ``valor serve`` in a subprocess until the block ends; waits until it answers.
    ``env`` adds to the environment; ``open_files`` lowers the server's open-file limit. The
    store is a new SQLite file in ``log_dir`` unless ``--store`` or ``VALOR_STORE`` says."""
    port = free_port()
    log_path = log_dir / f"valor-{port}.log"
    if "--store" not in args and "VALOR_STORE" not in (env or {}):
        args = (*args, "--store", str(log_dir / f"store-{port}.sqlite3"))
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "valor.cli", "serve", str(manifest), "--port", str(port), *args],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=None if open_files is None else lambda: _limit_files(open_files),
        )
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        deadline = time.monotonic() + startup
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"valor serve exited with {process.returncode}:\n{server.log()}")
            try:
                httpx.get(server.url + "/_health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"valor serve did not start:\n{server.log()}") from None
                time.sleep(0.05)
        yield server
    finally:
        stop_process(process)


def _limit_files(count: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


@dataclass
class RedisServer:
    url: str
    port: int
    process: subprocess.Popen[str]


@contextmanager
def redis_server(folder: Path, port: int | None = None) -> Iterator[RedisServer]:
    """Run Debian's ``redis-server`` on 127.0.0.1 (nothing saved to disk) until the block
    ends; waits until it answers. ``scripts/install-store.sh`` installs it."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed: run scripts/install-store.sh")
    port = port or free_port()
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(folder)]
    with open(folder / f"redis-{port}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    server = RedisServer(f"redis://127.0.0.1:{port}/0", port, process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                    connection.sendall(b"PING\r\n")
                    if connection.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)
        yield server
    finally:
        stop_process(process)
