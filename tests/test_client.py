"""Plug-ins call out (``valor.client``) in the server host: a real ``valor serve`` whose
plug-ins call a real upstream on 127.0.0.1 and each other. The browser's side of the same
table is tests/browser/test_client.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.callout import CALLOUT_CASES, callout_manifest, example_manifest
from tests.callout.upstream import Upstream, upstream
from tests.cases import run_cases
from tests.servers import Server, http_send, valor_server
from valor import Context, http_client
from valor.client import _matches, fetch_view
from valor.errors import ManifestError
from valor.kinds.asgi.core import load_asgi
from valor.kinds.python.core import load_python
from valor.manifest import load_manifest, parse_plugin
from valor.processes import free_port
from valor.runtime import Runtime


@pytest.fixture(scope="module")
def calling_upstream() -> Iterator[Upstream]:
    with upstream() as running:
        yield running


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, calling_upstream: Upstream
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("callout")
    closed = f"http://127.0.0.1:{free_port()}/"
    manifest = callout_manifest(folder / "plugins", calling_upstream.url, closed)
    with valor_server(manifest, log_dir=folder) as running:
        yield running


@pytest.mark.timeout(60)
def test_plugins_call_out_and_each_other_as_the_table_says(server: Server) -> None:
    run_cases(http_send(server.url), CALLOUT_CASES)


@pytest.mark.timeout(60)
def test_the_plugins_timeout_bounds_its_calls_out(server: Server) -> None:
    answer = httpx.get(server.url + "/caller/hang", timeout=30)
    assert answer.status_code == 504, answer.text
    assert answer.json()["detail"] == "plug-in 'caller' did not answer within 3 seconds"
    assert httpx.get(server.url + "/caller/answer").status_code == 200  # still serving


@pytest.mark.timeout(60)
def test_a_streamed_answer_is_read_part_by_part(server: Server, calling_upstream: Upstream) -> None:
    # The upstream holds its second part until the test has the first from the plug-in: a
    # client that read the whole answer before passing it on would stall here.
    with httpx.stream("GET", server.url + "/caller/stream", timeout=30) as answer:
        parts = answer.iter_raw()
        assert next(parts) == b"first part\n"
        calling_upstream.release_stream.set()
        assert b"".join(parts) == b"second part\n"


@pytest.mark.timeout(60)
def test_the_example_calls_its_sibling_and_an_outside_service(
    tmp_path: Path, calling_upstream: Upstream
) -> None:
    manifest = example_manifest(tmp_path / "plugins", calling_upstream.url)
    with valor_server(manifest, log_dir=tmp_path) as running:
        answer = httpx.get(running.url + "/digest?who=Bob", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "greeting": "Alice says hello Bob!",
        "news": {"headline": "Valor calls out"},
    }


def test_allow_list_patterns() -> None:
    assert _matches("api.example.com", "api.example.com", 443)
    assert not _matches("api.example.com", "example.com", 443)
    assert _matches("*.example.org", "a.b.example.org", 80)
    assert not _matches("*.example.org", "example.org", 80)
    assert not _matches("*.example.org", "badexample.org", 80)
    assert _matches("127.0.0.1:8080", "127.0.0.1", 8080)
    assert not _matches("127.0.0.1:8080", "127.0.0.1", 8081)
    assert _matches("[::1]:80", "::1", 80)
    assert _matches("*", "anything.at.all", 1)


@pytest.mark.parametrize(
    ("outbound", "problem"),
    [
        (["api.example.com"], 'must be an object {"allow": [host, ...]}'),
        ({"allow": "api.example.com"}, "'allow' must be a list of host names"),
        ({"allow": ["https://api.example.com"]}, "'allow' has 'https://api.example.com'"),
        ({"allow": ["api.example.com\n"]}, "'allow' has 'api.example.com\\n'"),
        ({"allow": [], "deny": []}, 'must be an object {"allow": [host, ...]}'),
    ],
)
def test_a_bad_outbound_field_is_a_manifest_error(outbound: object, problem: str) -> None:
    entry = {"name": "p", "type": "python", "path": "p.py", "outbound": outbound}
    with pytest.raises(ManifestError, match="'outbound'") as raised:
        parse_plugin(entry, Path("."))
    assert problem in str(raised.value)
    assert raised.value.field == "outbound"


def test_answer_headers_are_shown_as_fetch_shows_them() -> None:
    pairs = [("X-B", "1"), ("x-a", "2"), ("x-b", "3"), ("Set-Cookie", "a=1"), ("set-cookie", "b")]
    assert fetch_view(pairs) == [
        ("set-cookie", "a=1"),
        ("set-cookie", "b"),
        ("x-a", "2"),
        ("x-b", "1, 3"),
    ]


def test_the_client_is_only_for_plugins_a_runtime_runs() -> None:
    with pytest.raises(RuntimeError, match=r"valor\.http_client\(\) is for a plug-in"):
        http_client()
    with pytest.raises(RuntimeError, match=r"ctx\.http is for plug-ins a Valor runtime loads"):
        _ = Context("p", {}).http


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_a_sibling_is_found_below_the_runtimes_root_path(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/"
    manifest = callout_manifest(tmp_path / "plugins", closed, closed)
    runtime = Runtime({"python": load_python, "asgi": load_asgi}, root_path="/sub")
    await runtime.load(load_manifest(manifest), strict=True)
    try:
        message = {"url": "http://host/sub/caller/sibling", "method": "GET", "headers": [],
                   "body": None}  # fmt: skip
        answer = await runtime.handle(message)
    finally:
        await runtime.close()
    assert answer["status"] == 200, answer["body"]
    got = json.loads(json.loads(answer["body"])["body"])
    assert got["url"] == "http://host/below?q=1", got
    assert ["x-forwarded-prefix", "/sub/echo"] in got["headers"], got


ECHO_PATH = """from valor import vlugin


@vlugin
async def on_request(req):
    if req.path == "/latin":
        return (b"caf\\xe9", 200, {"content-type": "text/plain; charset=latin-1"})
    if req.path == "/unknown":
        return (b"caf\\xc3\\xa9", 200, {"content-type": "text/plain; charset=no-such-codec"})
    return req.path + "?" + str(req.query_params)
"""

CALLER = """from valor import vlugin


def on_create(ctx):
    pass


@vlugin
async def on_request(ctx, req):
    http = ctx.http
    seen = [(await http.get("/echo/a?n=1")).text, (await http.get("/echo/a?n=1")).text]
    seen.append((await http.get("/echo/a?n=1", params={"q": "2"})).text)
    seen.append((await http.get("/echo/latin")).text)
    seen.append((await http.get("/echo/latin")).text)
    seen.append((await http.get("/echo/unknown")).text)
    try:
        for base in ("http://valor.internal/echo/", "http://valor.internal/echo/a/"):
            http.base_url = base
            seen.append((await http.get("b")).text)
    finally:
        http.base_url = "http://valor.internal"
    seen.append((await http.get("/echo/a?n=1")).text)
    return {"seen": seen}
"""


@pytest.mark.anyio
@pytest.mark.timeout(60)
async def test_the_clients_shortcuts_answer_as_httpx_does(tmp_path: Path) -> None:
    # The client remembers merged URLs and content types' charsets (valor.client.PluginClient,
    # _charset): repeated calls, params, a changed base_url and charsets still read as httpx's.
    (tmp_path / "echo.py").write_text(ECHO_PATH)
    (tmp_path / "caller.py").write_text(CALLER)
    plugins = [
        {"name": "echo", "type": "python", "path": "echo.py"},
        {"name": "caller", "type": "python", "path": "caller.py"},
    ]
    (tmp_path / "plugins.json").write_text(json.dumps({"plugins": plugins}))
    runtime = Runtime({"python": load_python})
    await runtime.load(load_manifest(tmp_path / "plugins.json"), strict=True)
    try:
        message = {"url": "http://host/caller", "method": "GET", "headers": [], "body": None}
        answer = await runtime.handle(message)
    finally:
        await runtime.close()
    assert answer["status"] == 200, answer["body"]
    assert json.loads(answer["body"])["seen"] == [
        "/a?n=1",
        "/a?n=1",
        "/a?q=2",  # httpx 0.28+: params replace the URL's query, as with a plain client
        "café",
        "café",
        "café",  # an unknown charset: httpx's default, utf-8
        "/b?",
        "/a/b?",  # the same URL text, merged with the new base_url
        "/a?n=1",
    ]
