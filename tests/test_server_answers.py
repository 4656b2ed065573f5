"""What the server host sends, seen from outside by a client on 127.0.0.1 (httpx, or raw bytes
over a socket) against a real uvicorn: the request target alone routes (never Host), paths are
percent-decoded once and the same way as in the browser, and every answer is valid HTTP with
the runtime's reason phrases, or the runtime's JSON error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from tests.cases import run_cases
from tests.conftest import REGISTRY_TOKEN
from tests.parity.table import PARITY_CASES
from tests.servers import PARITY_MANIFEST, Server, http_send, raw_request, valor_server


def test_parity_table(parity_server: Server) -> None:
    run_cases(http_send(parity_server.url), PARITY_CASES)


def answer_with(server: Server, wanted: dict, method: str = "POST") -> httpx.Response:
    """Ask the ``answer`` plug-in to answer exactly ``wanted``."""
    return httpx.request(method, server.url + "/answer", content=json.dumps(wanted), timeout=10)


def get(server: Server, target: str, host: str) -> tuple[str, list[str], bytes]:
    request = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    return raw_request(server.url, request.encode("latin-1"))


def assert_runtime_error(response: httpx.Response, status: int, detail: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert len(response.headers.get_list("x-correlation-id")) == 1
    data = response.json()
    assert data["status"] == status and detail in data["detail"], data
    return data


# -- the request target routes, never Host (issue 11, row 5) ----------------------------------


@pytest.mark.parametrize(
    ("target", "host"),
    [
        ("/hello", "127.0.0.1:{port}/notes"),  # reached notes
        ("/greeter", "evil?who=Mallory&"),  # set the query: "Alice says hello Mallory!"
        ("/", "x/_plugins"),  # reached the registry
        ("/hello", "a@b"),
        ("/hello", "a b"),
    ],
)
def test_a_host_header_that_is_not_a_host_is_a_400_and_routes_nowhere(
    server: Server, target: str, host: str
) -> None:
    host = host.format(port=server.url.rsplit(":", 1)[1])
    status_line, headers, body = get(server, target, host)
    assert status_line == "HTTP/1.1 400 Bad Request", (status_line, body)
    assert json.loads(body) == {
        "status": 400,
        "error": "Bad Request",
        "detail": f"the Host header {host!r} is not a valid host[:port]",
    }
    assert sum(line.lower().startswith("x-correlation-id:") for line in headers) == 1
    assert not any(line.lower().startswith("x-valor-plugin:") for line in headers)


def test_a_valid_host_names_the_origin_and_nothing_else(parity_server: Server) -> None:
    status_line, _, body = get(parity_server, "/echo/a?b=c", "example.test:8080")
    assert status_line == "HTTP/1.1 200 OK"
    assert json.loads(body)["url"] == "http://example.test:8080/a?b=c"
    status_line, _, body = get(parity_server, "/echo/v6", "[::1]:80")
    assert json.loads(body)["url"] == "http://[::1]:80/v6"


# -- percent-encoded paths (issue 10, item 3; issue 11, row 10) --------------------------------


def test_an_encoded_question_mark_is_part_of_the_path(server: Server) -> None:
    answer = httpx.get(server.url + "/greeter%3Fwho=Eve")
    assert answer.status_code == 404, answer.text  # the path is "/greeter?who=Eve": no mount
    assert "Eve" not in answer.json().get("detail", "").replace("%3Fwho=Eve", "")


def test_an_encoded_hash_does_not_drop_the_query(server: Server) -> None:
    answer = httpx.get(server.url + "/greeter/x%23?who=Eve")
    assert (answer.status_code, answer.text) == (200, "Alice says hello Eve!")


def test_the_path_is_decoded_once_for_the_plugin_and_the_url_kept_as_sent(
    parity_server: Server,
) -> None:
    seen = httpx.get(parity_server.url + "/request/caf%C3%A9/a%20b%2Fc?q=%C3%A9").json()
    assert seen["path"] == "/café/a b/c"
    assert seen["url"].endswith("/caf%C3%A9/a%20b%2Fc?q=%C3%A9")
    assert seen["query"] == [["q", "é"]]


def test_an_encoded_slash_stays_inside_its_segment(parity_server: Server) -> None:
    # "/request%2Fx" is one segment named "request/x": not the request plug-in's mount.
    assert httpx.get(parity_server.url + "/request%2Fx").status_code == 404
    assert httpx.get(parity_server.url + "/req%75est/x").json()["path"] == "/x"


def test_a_url_with_characters_past_latin1_is_answered(server: Server) -> None:
    # echo puts the URL in a header: it stays percent-encoded, so it is valid HTTP.
    answer = httpx.get(server.url + "/echo/%E2%82%AC")
    assert answer.status_code == 200
    assert answer.headers["x-echo-url"].endswith("/%E2%82%AC")


# -- answers are valid HTTP, or the runtime's JSON error (issue 10; issue 11, row 11) ----------


@pytest.mark.parametrize(
    ("wanted", "detail"),
    [
        ({"status": 204, "body": "oops"}, "a 204 answer cannot have a body"),
        ({"status": 304, "body": "oops"}, "a 304 answer cannot have a body"),
        ({"status": 101}, "status 101 is not a final HTTP status"),
        ({"status": 103}, "status 103 is not a final HTTP status"),
        ({"status": 600}, "'status' must be an int from 100 to 599"),
        ({"headers": [["x-price", "10 €"]]}, "header 'x-price' has a value HTTP cannot carry"),
        ({"headers": [["x-split", "a\r\nx-evil: 1"]]}, "has a value HTTP cannot carry"),
        ({"headers": [["x-nul", "a\x00b"]]}, "has a value HTTP cannot carry"),
        ({"headers": [["x-latin", "caf\xe9"]]}, "has a value HTTP cannot carry"),
        ({"headers": [["bad name", "v"]]}, "header name 'bad name' is not a valid"),
        ({"headers": [["", "v"]]}, "header name '' is not a valid"),
        ({"headers": [["x-€", "v"]]}, "is not a valid HTTP field name"),
    ],
)
def test_an_answer_that_is_not_valid_http_is_the_runtimes_500(
    parity_server: Server, wanted: dict, detail: str
) -> None:
    answer = answer_with(parity_server, wanted)
    data = assert_runtime_error(answer, 500, "'answer' answered an invalid response")
    assert detail in data["detail"] and len(data["error_id"]) == 12
    assert answer.headers["x-valor-plugin"] == "answer"
    # The connection was not dropped and the server keeps serving.
    assert answer_with(parity_server, {"body": "fine"}).text == "fine"


def test_valid_odd_answers_pass_unchanged(parity_server: Server) -> None:
    answer = answer_with(
        parity_server,
        {"status": 299, "headers": [["x-odd", "!#~\t|"], ["x-pad", "  both sides\t"]]},
    )
    assert (answer.status_code, answer.reason_phrase) == (299, "")  # a code without a phrase
    raw = dict(answer.headers.raw)
    assert raw[b"x-odd"] == b"!#~\t|"
    assert raw[b"x-pad"] == b"both sides"  # trimmed, as fetch() trims


def test_reason_phrases_come_from_the_runtime_not_pythons_http_module(
    parity_server: Server,
) -> None:
    # CPython 3.11 says "Unprocessable Entity" and "Request Entity Too Large"; Pyodide's 3.14
    # says what RFC 9110 says, and so do both hosts.
    for status, phrase in [(422, "Unprocessable Content"), (413, "Content Too Large")]:
        request = (
            f"POST /answer HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
            f"Content-Length: {len(json.dumps({'status': status}))}\r\n\r\n"
            f"{json.dumps({'status': status})}"
        )
        status_line, _, _ = raw_request(parity_server.url, request.encode())
        assert status_line == f"HTTP/1.1 {status} {phrase}"


def test_an_error_names_the_runtimes_phrase(tmp_path: Path) -> None:
    with valor_server(PARITY_MANIFEST, "--max-body-size", "10", log_dir=tmp_path) as small:
        answer = httpx.post(small.url + "/echo", content=b"x" * 11)
        assert answer.reason_phrase == "Content Too Large"
        assert answer.json()["error"] == "Content Too Large"


def test_repeated_headers_are_all_sent_in_order(parity_server: Server) -> None:
    headers = [["link", "</a>; rel=next"], ["x-multi", "1"], ["link", "</b>"], ["x-multi", "2"]]
    answer = answer_with(parity_server, {"headers": headers})
    sent = [[k.decode(), v.decode()] for k, v in answer.headers.raw]
    assert [pair for pair in sent if pair[0] in ("link", "x-multi")] == headers


def test_an_answer_carries_one_correlation_id_the_runtimes(parity_server: Server) -> None:
    wanted = {"headers": [["X-Correlation-Id", "mine"], ["x-valor-plugin", "forged"]]}
    answer = httpx.post(
        parity_server.url + "/answer", content=json.dumps(wanted), headers={"x-request-id": "r-7"}
    )
    assert answer.headers.get_list("x-correlation-id") == ["r-7"]
    assert answer.headers.get_list("x-valor-plugin") == ["answer"]


def test_head_answers_like_get_without_a_body(parity_server: Server) -> None:
    get_answer = httpx.get(parity_server.url + "/request/x")
    head = httpx.head(parity_server.url + "/request/x")
    assert head.status_code == get_answer.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get_answer.headers["content-type"]
    assert head.headers["x-valor-plugin"] == "request"
    # The plug-in saw a GET: HEAD works for every plug-in that answers GET.
    assert get_answer.json()["method"] == "GET"
    missing = httpx.head(parity_server.url + "/nowhere")
    assert (missing.status_code, missing.content) == (404, b"")


def test_head_on_the_builtins(server: Server) -> None:
    auth = {"authorization": f"Bearer {REGISTRY_TOKEN}"}
    for path, headers in [("/_health", {}), ("/_plugins", auth), ("/_plugins/hello", auth)]:
        head = httpx.head(server.url + path, headers=headers)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == "application/json"


# -- what a plug-in receives ---------------------------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH", "DELETE"])
def test_a_request_without_a_body_has_body_none(parity_server: Server, method: str) -> None:
    for content in (None, b""):
        seen = httpx.request(method, parity_server.url + "/echo", content=content).json()
        assert seen["body"] is None, (method, content, seen)


def test_repeated_request_headers_arrive_as_fetch_hands_them_over(parity_server: Server) -> None:
    request = (
        "GET /echo HTTP/1.1\r\nHost: h\r\nX-B: 1\r\nx-a: z\r\nX-B: 2\r\nConnection: close\r\n\r\n"
    )
    _, _, body = raw_request(parity_server.url, request.encode())
    headers = json.loads(body)["headers"]
    names = [name for name, _ in headers]
    assert ["x-a", "z"] in headers and ["x-b", "1, 2"] in headers
    plugin_added = names[-2:]  # the runtime's own, after the sorted ones
    assert plugin_added == ["x-request-id", "x-forwarded-prefix"]
    assert names[:-2] == sorted(names[:-2])


def test_a_js_worker_gets_an_arraybuffer_body(parity_server: Server) -> None:
    seen = httpx.post(parity_server.url + "/js-echo", content=b"\x07abc").json()
    assert seen["bodyType"] == "[object ArrayBuffer]"
    assert (seen["bodyLength"], seen["firstByte"]) == (4, 7)
    assert httpx.get(parity_server.url + "/js-echo").json()["bodyType"] == "null"


def test_a_plugin_imports_a_module_beside_it(parity_server: Server) -> None:
    assert httpx.get(parity_server.url + "/helper").text == "Hello from a helper module"


# -- start-up without lifespan ---------------------------------------------------------------


@pytest.mark.anyio
async def test_first_requests_without_lifespan_wait_for_the_plugins(tmp_path: Path) -> None:
    from valor.server import create_app

    (tmp_path / "slow.py").write_text(
        "import asyncio\nfrom valor import vlugin\n\n"
        "@vlugin\nasync def on_create(ctx):\n    await asyncio.sleep(0.5)  # a slow start\n\n"
        "@vlugin\ndef on_request(ctx, req):\n    return 'loaded'\n"
    )
    (tmp_path / "plugins.json").write_text(
        json.dumps({"plugins": [{"name": "slow", "type": "python", "path": "slow.py"}]})
    )
    app = create_app(tmp_path / "plugins.json")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        answers = await asyncio.gather(*(client.get("/slow") for _ in range(5)))
    assert [(a.status_code, a.text) for a in answers] == [(200, "loaded")] * 5
    await app.runtime.close()


def test_no_content_length_where_http_has_no_body() -> None:
    from valor.asgi_http import response_events

    def framing(status: int, head: bool = False) -> list[tuple[bytes, bytes]]:
        start, _ = response_events({"status": status, "headers": [], "body": b""}, head)
        return [pair for pair in start["headers"] if pair[0] == b"content-length"]

    assert framing(204) == framing(304) == framing(200, head=True) == []
    assert framing(205) == framing(200) == [(b"content-length", b"0")]
