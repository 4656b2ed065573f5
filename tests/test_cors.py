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


STARLETTE_CORS = """from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def hello(request):
    return PlainTextResponse("hi", headers={"vary": "accept-encoding"})

app = Starlette(
    routes=[Route("/", hello)],
    middleware=[Middleware(CORSMiddleware, allow_origins=["*"], expose_headers=["x-a"])],
)
"""
# As a proxy to an API that allows every origin answers.
API_ALLOWS_ALL = """from valor import Response, vlugin
@vlugin
def on_request(req):
    return Response("api", headers={"access-control-allow-origin": "*"})
"""


@pytest.mark.timeout(60)
def test_an_app_with_cors_of_its_own_answers_one_allowed_origin(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(STARLETTE_CORS)
    (tmp_path / "api.py").write_text(API_ALLOWS_ALL)
    manifest = tmp_path / "plugins.json"
    manifest.write_text(
        '{"plugins": [{"name": "app", "type": "asgi", "path": "app.py"},'
        ' {"name": "api", "type": "python", "path": "api.py"}]}'
    )
    with valor_server(manifest, "--cors", SITE, log_dir=tmp_path) as running:
        for path in ("/app", "/api"):
            answer = httpx.get(running.url + path, headers={"origin": SITE})
            assert answer.status_code == 200
            # Chromium refuses an answer with two values (or "*, origin") outright.
            assert answer.headers.get_list("access-control-allow-origin") == [SITE], path
            assert answer.headers.get_list("access-control-expose-headers") == ["*"], path
        assert answer.headers.get_list("vary") == ["origin"]
        vary = httpx.get(running.url + "/app", headers={"origin": SITE}).headers
        (joined,) = vary.get_list("vary")
        assert [token.strip().lower() for token in joined.split(",")] == [
            "accept-encoding",
            "origin",
        ]
        # Without --cors's origin, the app's own CORS answer is left as it is.
        other = httpx.get(running.url + "/app", headers={"origin": "https://other.test"})
        assert other.headers.get_list("access-control-allow-origin") == ["*"]
