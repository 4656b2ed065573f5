"""Every plug-in kind in the server host, over real HTTP: the shared table per kind, then what
each kind does when it crashes, hangs, is misconfigured or is added at run time."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.cases import run_cases
from tests.conftest import REGISTRY_TOKEN
from tests.kinds.conftest import EXAMPLES, FAULTY, GARBAGE
from tests.kinds.table import MAX_BODY, RUST_MOUNTS, SERVER_KINDS, kind_cases, rust_cases
from tests.servers import ROOT, Server, http_send
from valor.failures import PluginFailed
from valor.kinds.wasi.cgi import cgi_environ
from valor.kinds.wasm.core import exchange
from valor.manifest import parse_plugin
from valor.server import SERVER_LOADERS as SERVER_KIND_LOADERS

AUTH = {"authorization": f"Bearer {REGISTRY_TOKEN}"}


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_shared_table_per_kind(kinds_server: Server, kind: str) -> None:
    run_cases(http_send(kinds_server.url), kind_cases(kind))


@pytest.mark.parametrize("mount", RUST_MOUNTS)
def test_rust_plugins_per_kind(kinds_server: Server, mount: str) -> None:
    run_cases(http_send(kinds_server.url), rust_cases(mount))


@pytest.mark.parametrize("kind", [*SERVER_KINDS, *RUST_MOUNTS])
def test_oversized_body_is_a_413_and_the_plugin_keeps_serving(
    kinds_server: Server, kind: str
) -> None:
    answer = httpx.post(kinds_server.url + f"/{kind}/echo", content=b"x" * (MAX_BODY + 1))
    assert answer.status_code == 413 and answer.json()["status"] == 413
    assert httpx.get(kinds_server.url + f"/{kind}").text == "Hello Plugin!"


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_registry_adds_and_removes_a_plugin_at_run_time(
    kinds_server: Server, upstream: str, kind: str
) -> None:
    name = f"{kind}-added"
    source = {"url": upstream} if kind == "proxy" else {"path": EXAMPLES[kind]}
    definition = {"name": name, "type": kind, "prefix": f"/added/{kind}", **source}
    with httpx.Client(base_url=kinds_server.url, timeout=10) as client:
        created = client.post("/_plugins", json=definition, headers=AUTH)
        assert created.status_code == 201, created.text
        answer = client.get(f"/added/{kind}")
        assert (answer.status_code, answer.text) == (200, "Hello Plugin!")
        assert answer.headers["x-valor-plugin"] == name
        assert client.delete(f"/_plugins/{name}", headers=AUTH).status_code == 200
        assert client.get(f"/added/{kind}").status_code == 404


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("js", "SyntaxError"),
        ("wasm", "is not a valid WebAssembly module"),
        ("wasi", "is not a valid WebAssembly module"),
        ("native", "garbage.so"),
    ],
)
def test_a_bad_module_file_is_a_load_error_naming_the_plugin(
    kinds_server: Server, kind: str, reason: str
) -> None:
    name = f"{kind}-bad"
    definition = {"name": name, "type": kind, "path": GARBAGE[kind][0]}
    answer = httpx.post(kinds_server.url + "/_plugins", json=definition, headers=AUTH, timeout=30)
    assert answer.status_code == 400, answer.text
    detail = answer.json()["detail"]
    assert repr(name) in detail and reason in detail, detail
    assert httpx.get(kinds_server.url + f"/{kind}").status_code == 200


@pytest.mark.parametrize("kind", ["js", "wasm", "wasi", "native"])
def test_a_missing_module_file_is_a_load_error(kinds_server: Server, kind: str) -> None:
    definition = {"name": f"{kind}-missing", "type": kind, "path": "nowhere/missing.bin"}
    answer = httpx.post(kinds_server.url + "/_plugins", json=definition, headers=AUTH, timeout=30)
    assert answer.status_code == 400, answer.text
    assert f"'{kind}-missing'" in answer.json()["detail"]


def test_a_kind_with_the_wrong_exports_is_a_clear_load_error(kinds_server: Server) -> None:
    # A WASI command is not a wasm plug-in (it imports WASI and has no alloc/handle), and the
    # other way round.
    wrong = [
        ("wasm-wrong", "wasm", "hello.wasi.wasm", "must import nothing"),
        ("wasi-wrong", "wasi", "hello.wasm", "must be a command exporting '_start'"),
        ("native-wrong", "native", "hello.wasm", "invalid ELF header"),
    ]
    for name, kind, path, reason in wrong:
        definition = {"name": name, "type": kind, "path": path}
        answer = httpx.post(kinds_server.url + "/_plugins", json=definition, headers=AUTH)
        assert answer.status_code == 400, answer.text
        assert reason in answer.json()["detail"], answer.text


def test_js_worker_has_timers_crypto_and_fetch(kinds_server: Server, upstream: str) -> None:
    answer = httpx.get(
        kinds_server.url + "/js-faulty/later", headers={"x-upstream": upstream}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert len(data["uuid"]) == 36
    assert data["sha256"] == hashlib.sha256(b"valor").hexdigest()
    assert data["fetched"] == "Hello Plugin!"


def test_js_answer_that_is_not_a_response_is_a_500(kinds_server: Server) -> None:
    answer = httpx.get(kinds_server.url + "/js-faulty/bad")
    assert answer.status_code == 500
    assert "expected {status, headers, body}" in answer.json()["detail"]


def test_js_heap_is_bounded_by_max_memory_mb(kinds_server: Server) -> None:
    answer = httpx.get(kinds_server.url + "/js-grow/grow", timeout=30)
    assert answer.status_code == 502, answer.text  # not the 504 of its 20 s timeout
    assert "crashed" in answer.json()["detail"]
    assert httpx.get(kinds_server.url + "/js-grow/").text == "Hello Plugin!"


def test_js_hung_worker_does_not_block_the_others(kinds_server: Server) -> None:
    hung: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: hung.append(httpx.get(kinds_server.url + "/js-faulty/hang", timeout=10))
    )
    thread.start()
    time.sleep(0.3)  # for the hanging request to reach its worker; not a wait for an event
    answer = httpx.get(kinds_server.url + "/js-faulty/")
    assert answer.text == "Hello Plugin!"
    assert not hung  # answered while the hanging request still waits (its timeout is 2 s)
    thread.join()
    assert hung[0].status_code == 504


@pytest.mark.parametrize("kind", SERVER_KINDS)
def test_concurrent_requests_get_their_own_answers(kinds_server: Server, kind: str) -> None:
    # Threads, not asyncio: Playwright's sync API may own this thread's event loop.
    bodies = [f"{kind}-{i}".encode() for i in range(40)]
    with (
        httpx.Client(base_url=kinds_server.url, timeout=30) as client,
        ThreadPoolExecutor(max_workers=20) as pool,
    ):
        answers = list(pool.map(lambda b: client.post(f"/{kind}/echo", content=b), bodies))
    assert [a.content for a in answers] == bodies


def test_wasm_memory_cap_and_fuel(kinds_server: Server) -> None:
    big = httpx.get(kinds_server.url + "/wasm-faulty/big")
    assert big.status_code == 500 and "trapped" in big.json()["detail"], big.text
    fuel = httpx.get(kinds_server.url + "/wasm-fuel")
    assert fuel.status_code == 500 and "ran out of fuel" in fuel.json()["detail"], fuel.text
    assert httpx.get(kinds_server.url + "/wasm-faulty").text == "Hello Plugin!"


def test_wasi_exit_code_and_bad_output_are_500s_and_stderr_is_logged(
    kinds_server: Server,
) -> None:
    exited = httpx.get(kinds_server.url + "/wasi-faulty/exit")
    assert exited.status_code == 500 and "exited with code 3" in exited.json()["detail"]
    garbage = httpx.get(kinds_server.url + "/wasi-faulty/garbage")
    assert garbage.status_code == 500 and "no header block" in garbage.json()["detail"]
    deadline = time.monotonic() + 5
    while "faulty.wasi: giving up" not in kinds_server.log():
        assert time.monotonic() < deadline, kinds_server.log()[-2000:]
        time.sleep(0.05)


def test_native_error_code_and_stdout_noise(kinds_server: Server) -> None:
    failed = httpx.get(kinds_server.url + "/native-faulty/fail")
    assert failed.status_code == 500 and "returned 7" in failed.json()["detail"]
    printed = httpx.get(kinds_server.url + "/native-faulty/print")
    assert printed.text == "Hello Plugin!"
    assert httpx.get(kinds_server.url + "/native-faulty/config").json() == {"greeting": "hi"}


def test_proxy_forwards_method_path_query_headers_and_body(kinds_server: Server) -> None:
    answer = httpx.put(
        kinds_server.url + "/proxy/echo?a=1&a=2",
        content=b"payload",
        headers={"content-type": "text/x-demo", "connection": "keep-alive"},
    )
    assert answer.status_code == 200 and answer.content == b"payload"
    assert answer.headers["x-echo-method"] == "PUT"
    assert answer.headers["x-echo-query"] == "a=1&a=2"
    assert answer.headers["x-echo-forwarded-host"] == kinds_server.url.split("://")[1]
    assert answer.headers.get_list("set-cookie") == ["a=1", "b=2"]
    assert answer.headers.get_list("x-valor-plugin") == ["proxy"]


def test_proxy_down_names_the_upstream(kinds_server: Server) -> None:
    answer = httpx.get(kinds_server.url + "/proxy-down/x")
    assert answer.status_code == 502
    assert "unreachable" in answer.json()["detail"]


@pytest.mark.parametrize("kind", ["wasm", "wasi"])
def test_a_hung_wasm_call_is_interrupted_and_frees_its_thread(kinds_site: Path, kind: str) -> None:
    # The runtime answers 504 on its own timer whatever happens to the call; this checks that
    # the epoch ticker (which sleeps while no wasm runs) wakes and stops the call itself.
    definition = {"name": "hung", "type": kind, "path": FAULTY[kind], "timeout": 0.5}
    plugin = asyncio.run(SERVER_KIND_LOADERS[kind](parse_plugin(definition, kinds_site)))
    hang = {"url": "http://test/hang", "method": "GET", "headers": [], "body": None}
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            if kind == "wasm":
                plugin.engine._run(lambda: exchange(plugin.spec, plugin.limits, hang))
            else:
                plugin.engine._run(["hung"], cgi_environ(hang), b"")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)  # daemon: a stuck call must not hang us
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the wasm call was never interrupted"
    assert isinstance(outcome[0], PluginFailed) and outcome[0].status == 504


RUST_AND_C = ["hello-wasm", "hello-native", "hello-rust", "hello-rust-native"]
HELLO_REQUESTS = [
    ("GET", "", {}, b""),
    ("POST", "/echo", {"content-type": "text/x-demo"}, "héllo".encode()),
    ("POST", "/echo", {"content-type": "application/octet-stream"}, bytes(range(256))),
    ("GET", "/nope?x=1", {}, b""),
]


def comparable(answer: httpx.Response) -> tuple:
    """An answer in full, but for the headers that name the plug-in or the request."""
    headers = tuple(
        sorted(
            (k, v)
            for k, v in answer.headers.items()
            if k not in ("x-valor-plugin", "x-correlation-id")
        )
    )
    return answer.status_code, headers, answer.content


def test_rust_examples_answer_exactly_as_the_c_and_python_ones() -> None:
    """hello-rust (wasm and native) answers every request of the table byte for byte as the
    C examples do; rust-greeter (plugins/src/greeter-rust) greets as greeter.py does."""
    from valor.testing import TestClient

    with TestClient(ROOT / "plugins" / "plugins.json") as client:
        for method, path, headers, body in HELLO_REQUESTS:
            answers = {
                name: comparable(client.request(method, f"/{name}{path}", headers=headers,
                                                content=body))
                for name in RUST_AND_C
            }  # fmt: skip
            assert len(set(answers.values())) == 1, (method, path, answers)
        python, rust = (
            comparable(client.get(f"/{n}?who=Bob")) for n in ("greeter", "rust-greeter")
        )
        assert python == rust and rust[2] == b"Alice says hello Bob!"
        python, rust = (client.get(f"/{n}").json() for n in ("greeter", "rust-greeter"))
        assert {k: python[k] for k in ("status", "error")} == {
            k: rust[k] for k in ("status", "error")
        }
        assert python["detail"].startswith(rust["detail"].split(" as in ")[0])
