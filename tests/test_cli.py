"""``valor serve``: help a person can use, uvicorn's deployment options under uvicorn's names,
and logging through the standard ``logging`` tree."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import MANIFEST, valor_server
from valor import cli
from valor.processes import free_port, stop_process
from valor.testing import TestClient

UVICORN_OPTIONS = [
    "--root-path",
    "--proxy-headers",
    "--no-proxy-headers",
    "--forwarded-allow-ips",
    "--uds",
    "--ssl-keyfile",
    "--ssl-certfile",
    "--log-config",
    "--log-level",
]


def valor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "valor.cli", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def echo_manifest(tmp_path: Path) -> Path:
    shutil.copy(MANIFEST.parent / "echo.py", tmp_path / "echo.py")
    manifest = tmp_path / "plugins.json"
    manifest.write_text('{"plugins": [{"name": "echo", "type": "python", "path": "echo.py"}]}')
    return manifest


def test_help_is_written_for_users() -> None:
    top = valor("--help")
    assert top.returncode == 0
    assert "lives in the module" not in top.stdout  # a maintainers' note, not help
    assert "manifest, a JSON file listing the plug-ins" in top.stdout
    serve = valor("serve", "--help").stdout
    assert "MANIFEST" in serve and "(default: plugins/plugins.json)" in serve
    assert "(default: 127.0.0.1;" in serve and "(default: 8000)" in serve
    for option in UVICORN_OPTIONS:
        assert option in serve, option
    dev = valor("dev", "--help").stdout
    assert "MANIFEST" in dev and "a JSON file listing the plug-ins" in dev
    assert "(default: 8080)" in dev and "(default: 8000)" in dev
    build = " ".join(valor("build", "--help").stdout.split())  # as one line, unwrapped
    assert "plug-in manifest" in build and "(default: plugins/plugins.json)" in build
    assert "served under (default: /)" in build


def test_options_reach_uvicorn_under_its_names() -> None:
    args = cli._parser().parse_args(
        ["serve", "m.json", "--root-path", "/api", "--no-proxy-headers", "--forwarded-allow-ips",
         "10.0.0.1", "--uds", "/tmp/v.sock", "--ssl-keyfile", "k.pem", "--ssl-certfile", "c.pem",
         "--log-config", "log.json", "--log-level", "debug"]
    )  # fmt: skip
    assert cli._deployment_options(args) == {
        "root_path": "/api",
        "proxy_headers": False,
        "forwarded_allow_ips": "10.0.0.1",
        "uds": "/tmp/v.sock",
        "ssl_keyfile": "k.pem",
        "ssl_certfile": "c.pem",
        "log_config": "log.json",
        "log_level": "debug",
    }
    defaults = cli._deployment_options(cli._parser().parse_args(["serve"]))
    assert defaults["proxy_headers"] is True and defaults["log_level"] is None  # as uvicorn's
    assert defaults["log_config"]["loggers"]["valor"] == {"level": "INFO"}


def test_behind_a_proxy_root_path_and_forwarded_headers(
    echo_manifest: Path, tmp_path: Path
) -> None:
    with valor_server(
        echo_manifest, "--root-path", "/api", "--forwarded-allow-ips", "*", log_dir=tmp_path
    ) as server:
        # The proxy strips /api and says the client spoke https.
        answer = httpx.get(server.url + "/echo/x?y=1", headers={"x-forwarded-proto": "https"})
        assert answer.status_code == 200
        host = server.url.removeprefix("http://")
        assert answer.headers["x-echo-url"] == f"https://{host}/x?y=1"
    with valor_server(echo_manifest, "--no-proxy-headers", log_dir=tmp_path) as server:
        answer = httpx.get(server.url + "/echo/x", headers={"x-forwarded-proto": "https"})
        assert answer.headers["x-echo-url"].startswith("http://")


@contextmanager
def serving(args: list[str], ready: httpx.Client, url: str, log: Path) -> Iterator[None]:
    """``valor serve ARGS`` until the block ends, once ``ready`` answers ``url``."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "valor.cli", "serve", *args], stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            try:
                ready.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield
    finally:
        stop_process(process)


def test_a_unix_domain_socket(echo_manifest: Path, tmp_path: Path) -> None:
    socket = tmp_path / "valor.sock"
    client = httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)))
    with (
        client,
        serving(
            [str(echo_manifest), "--uds", str(socket)],
            client,
            "http://valor/_health",
            tmp_path / "log",
        ),
    ):
        answer = client.get("http://valor/echo/over-a-socket")
        assert answer.headers["x-echo-url"].endswith("/over-a-socket")


def test_tls_with_a_key_and_certificate(echo_manifest: Path, tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    args = [str(echo_manifest), "--port", str(port), "--ssl-keyfile", str(key)]
    client = httpx.Client(verify=False)
    url = f"https://127.0.0.1:{port}"
    with client, serving([*args, "--ssl-certfile", str(cert)], client, url, tmp_path / "log"):
        answer = client.get(url + "/echo/secure")
        assert answer.headers["x-echo-url"] == f"https://127.0.0.1:{port}/secure"


def test_log_config_decides_where_valor_logs_go(echo_manifest: Path, tmp_path: Path) -> None:
    lines = tmp_path / "valor.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"mine": {"format": "MINE %(name)s %(message)s"}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(lines), "formatter": "mine"}
        },
        "loggers": {"valor": {"handlers": ["file"], "level": "INFO"}},
    }
    (tmp_path / "logging.json").write_text(json.dumps(config))
    with valor_server(
        echo_manifest, "--log-config", str(tmp_path / "logging.json"), log_dir=tmp_path
    ) as server:
        httpx.get(server.url + "/echo/logged", headers={"x-request-id": "id-42"})
        deadline = time.monotonic() + 10
        while "id-42" not in lines.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        written = lines.read_text()
        assert "MINE valor.access echo 200 GET /echo/logged" in written
        assert "MINE valor mounted python plug-in 'echo'" in written
        assert "id-42" not in server.log()  # Valor added no handler of its own


def test_the_default_logs_access_lines_to_stderr(echo_manifest: Path, tmp_path: Path) -> None:
    with valor_server(echo_manifest, log_dir=tmp_path) as server:
        httpx.get(server.url + "/echo/x", headers={"x-request-id": "id-7"})
        deadline = time.monotonic() + 10
        while "id-7" not in server.log() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert " INFO valor.access: echo 200 GET /echo/x " in server.log()


def test_valor_logs_propagate_and_have_no_handler_of_their_own(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VALOR_MANIFEST", str(MANIFEST))
    monkeypatch.setenv("VALOR_LOG_LEVEL", "info")
    monkeypatch.setattr(logging.getLogger("valor"), "level", logging.NOTSET)  # restored after
    cli.app_from_environment()
    assert logging.getLogger("valor").level == logging.INFO
    for name in ("valor", "valor.access", "valor.plugins"):
        logger = logging.getLogger(name)
        assert logger.handlers == [] and logger.propagate, name
    with caplog.at_level(logging.INFO), TestClient(MANIFEST) as client:
        client.get("/hello", headers={"x-request-id": "seen-by-root"})
    assert any(
        r.name == "valor.access" and "seen-by-root" in r.getMessage() for r in caplog.records
    )


def test_the_stack_is_httptools_and_uvloop_where_installed_else_h11_and_asyncio(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from valor import connections

    assert cli.server_stack("auto", "auto") == (connections.GuardedHttpToolsProtocol, "uvloop")
    assert cli.server_stack("h11", "asyncio") == (connections.GuardedH11Protocol, "asyncio")
    assert capsys.readouterr().err == ""
    # Where the wheels do not exist, auto falls back and says so; a name asked for is an error.
    monkeypatch.setattr(connections, "HTTPTOOLS", False)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "uvloop" else find_spec(name)
    )
    assert cli.server_stack("auto", "auto") == (connections.GuardedH11Protocol, "asyncio")
    err = capsys.readouterr().err
    assert "httptools is not installed; serving HTTP with h11" in err
    assert "uvloop is not installed; running on asyncio's loop" in err
    with pytest.raises(LookupError, match="--http httptools: httptools is not installed"):
        cli.server_stack("httptools", "auto")
    with pytest.raises(LookupError, match="--loop uvloop: uvloop is not installed"):
        cli.server_stack("auto", "uvloop")


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_each_protocol_serves_with_two_workers(
    echo_manifest: Path, tmp_path: Path, http: str
) -> None:
    # Worker processes get the protocol class from the supervisor (pickled by reference).
    with valor_server(
        echo_manifest, "--http", http, "--loop", "auto", "--workers", "2", log_dir=tmp_path
    ) as server:
        answer = httpx.get(server.url + "/echo/x")
        assert answer.status_code == 200
        assert answer.headers["x-echo-url"].endswith("/x")
