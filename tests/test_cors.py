"""``valor serve --cors ORIGIN``: a real uvicorn server lets the pages of that origin (a
bundle's ``--fallback``) call it, preflights included, and no other origin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.servers import MANIFEST, Server, valor_server

SITE = "http://127.0.0.1:8080"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log_dir = tmp_path_factory.mktemp("cors-logs")
    with valor_server(
        MANIFEST, "--cors", SITE, "--cors", "https://other.test", log_dir=log_dir
    ) as s:
        yield s


def test_a_preflight_from_an_allowed_origin_is_answered_here(server: Server) -> None:
    answer = httpx.options(
        server.url + "/echo/x",
        headers={
            "origin": SITE,
            "access-control-request-method": "PUT",
            "access-control-request-headers": "content-type, x-custom",
        },
    )
    assert answer.status_code == 204
    assert answer.headers["access-control-allow-origin"] == SITE
    assert answer.headers["access-control-allow-methods"] == "PUT"
    assert answer.headers["access-control-allow-headers"] == "content-type, x-custom"
    assert "x-valor-plugin" not in answer.headers, "no plug-in saw the preflight"


def test_answers_to_an_allowed_origin_expose_every_header(server: Server) -> None:
    answer = httpx.get(server.url + "/hello", headers={"origin": "https://other.test"})
    assert answer.status_code == 200 and answer.text == "Hello Plugin!"
    assert answer.headers["access-control-allow-origin"] == "https://other.test"
    assert answer.headers["access-control-expose-headers"] == "*"
    assert answer.headers["vary"] == "origin"
    assert answer.headers["x-valor-host"] == "server"


def test_other_origins_get_no_cors_headers(server: Server) -> None:
    answer = httpx.get(server.url + "/hello", headers={"origin": "https://evil.test"})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    preflight = httpx.options(
        server.url + "/hello",
        headers={"origin": "https://evil.test", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    plain = httpx.get(server.url + "/hello")
    assert "access-control-allow-origin" not in plain.headers


def test_without_the_option_nothing_changes(tmp_path: Path) -> None:
    with valor_server(MANIFEST, log_dir=tmp_path) as plain:
        answer = httpx.get(plain.url + "/hello", headers={"origin": SITE})
        assert "access-control-allow-origin" not in answer.headers
        assert answer.headers["x-valor-host"] == "server"
