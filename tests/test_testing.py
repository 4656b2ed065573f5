"""``valor.testing.TestClient``: in-process requests, like Starlette's TestClient."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.cases import CASES, Answer, Case, run_cases
from tests.servers import MANIFEST
from valor.errors import PluginLoadError
from valor.manifest import load_manifest
from valor.runtime import Runtime
from valor.server import SERVER_LOADERS
from valor.testing import Response, TestClient
from valor.testing.hosts import HostError, ServerHost


def write_plugins(folder: Path, **sources: str) -> Path:
    """A manifest in ``folder`` mounting one Python plug-in per keyword."""
    for name, source in sources.items():
        (folder / f"{name}.py").write_text(source)
    manifest = folder / "plugins.json"
    manifest.write_text(
        json.dumps({"plugins": [{"name": n, "type": "python", "path": f"{n}.py"} for n in sources]})
    )
    return manifest


OK = "from valor import vlugin\n@vlugin\ndef on_request(r):\n    return 'ok'\n"


def test_the_shared_table_passes_in_process() -> None:
    with TestClient(MANIFEST) as client:

        def send(case: Case) -> Answer:
            response = client.request(
                case.method, case.path, headers=case.headers, content=case.body
            )
            return Answer(response.status_code, response.headers, response.content)

        run_cases(send)


def test_response_api() -> None:
    with TestClient(MANIFEST) as client:
        hello = client.get("/hello")
        assert isinstance(client, httpx.Client)
        assert Response is httpx.Response and isinstance(hello, httpx.Response)
        assert hello.status_code == 200 and hello.is_success
        assert hello.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert hello.content == b"Hello Plugin!"
        assert hello.text == "Hello Plugin!"
        missing = client.get("/nope")
        assert missing.status_code == 404 and not missing.is_success
        assert missing.json()["error"] == "Not Found"
        assert repr(missing) == "<Response [404 Not Found]>"


def test_request_building() -> None:
    with TestClient(MANIFEST) as client:
        greeted = client.get("/greeter", params={"who": "Bob"})
        assert greeted.text == "Alice says hello Bob!"
        echoed = client.post(
            "/echo/p", params=[("a", "1"), ("b", "2"), ("b", "3")], data={"k": "v w"}
        )
        assert echoed.headers["x-echo-url"] == "http://testserver/p?a=1&b=2&b=3"
        assert echoed.headers["content-type"] == "application/x-www-form-urlencoded"
        assert echoed.content == b"k=v+w"
        sent = client.put("/echo", json={"x": [1, 2]}, headers={"x-request-id": "id-7"})
        assert sent.json() == {"x": [1, 2]}
        assert sent.headers["x-correlation-id"] == "id-7"
        assert sent.headers["x-echo-method"] == "PUT"
        assert client.patch("/echo", content="é").content == "é".encode()
        assert client.delete("/echo").headers["x-echo-method"] == "DELETE"


def test_the_plugin_sees_what_a_server_would(tmp_path: Path) -> None:
    manifest = write_plugins(
        tmp_path,
        seen=(
            "def onmessage(event):\n"
            "    postMessage({'body': {k: v for k, v in event.data.items() if k != 'body'}})\n"
        ),
    )
    with TestClient(manifest) as client:
        seen = client.get("/seen/a?b=1", headers={"X-Custom": "1"}).json()
    assert seen["url"] == "http://testserver/a?b=1" and seen["method"] == "GET"
    headers = dict(seen["headers"])
    assert headers["host"] == "testserver" and headers["x-custom"] == "1"
    with TestClient(manifest) as client:
        posted = client.post("/seen", content=b"").json()  # an empty body arrives as none
    assert dict(posted["headers"])["content-length"] == "0"


COOKIES_AND_REDIRECTS = (
    "from valor import Response, vlugin\n"
    "@vlugin\n"
    "def route(req):\n"
    "    if req.path == '/login':\n"
    "        return Response(None, 303, {'location': '/jar/me', 'set-cookie': 'who=ann; Path=/'})\n"
    "    return {'cookie': req.headers.get('cookie')}\n"
)


def test_httpx_features_come_for_free(tmp_path: Path) -> None:
    manifest = write_plugins(tmp_path, jar=COOKIES_AND_REDIRECTS)
    with TestClient(manifest) as client:
        followed = client.post("/jar/login")  # redirects are followed, as in Starlette's
        assert followed.json() == {"cookie": "who=ann"}
        assert [r.status_code for r in followed.history] == [303]
        assert client.cookies["who"] == "ann"
        assert client.get("/jar/me").json() == {"cookie": "who=ann"}
    with TestClient(manifest, follow_redirects=False, headers={"x-a": "1"}) as client:
        answer = client.post("/jar/login")
        assert answer.status_code == 303 and answer.next_request is not None
        assert client.headers["x-a"] == "1"


def test_header_names_arrive_in_lower_case_as_in_both_hosts(tmp_path: Path) -> None:
    manifest = write_plugins(
        tmp_path,
        names=(
            "def onmessage(event):\n"
            "    postMessage({'body': [n for n, _ in event.data['headers']]})\n"
        ),
    )
    with TestClient(manifest) as client:
        names = client.get("/names", headers={"X-Custom": "1"}).json()
    assert "x-custom" in names and all(name == name.lower() for name in names)


def test_text_uses_the_declared_charset(tmp_path: Path) -> None:
    manifest = write_plugins(
        tmp_path,
        latin=(
            "from valor import Response, vlugin\n@vlugin\ndef on_request(r):\n"
            "    return Response('café'.encode('latin-1'), "
            "media_type='text/plain; charset=latin-1')\n"
        ),
    )
    with TestClient(manifest) as client:
        assert client.get("/latin").text == "café"


def test_state_lasts_for_the_block_and_not_beyond() -> None:
    with TestClient(MANIFEST) as client:
        assert client.post("/notes", json={"text": "kept"}).status_code == 201
        assert len(client.get("/notes").json()["notes"]) == 2
    with TestClient(MANIFEST) as client:
        assert len(client.get("/notes").json()["notes"]) == 1


def test_accepts_a_manifest_object_and_base_url() -> None:
    with TestClient(load_manifest(MANIFEST), base_url="https://example.test/") as client:
        echoed = client.get("/echo/here")
        assert echoed.headers["x-echo-url"] == "https://example.test/here"


def test_accepts_a_configured_runtime() -> None:
    runtime = Runtime(SERVER_LOADERS, root_path="/api", registry=True, registry_token="t")
    with TestClient(runtime, MANIFEST) as client:
        assert client.get("/api/hello").text == "Hello Plugin!"
        assert client.get("/hello").status_code == 404
        assert client.get("/api/_plugins").status_code == 401
        listed = client.get("/api/_plugins", headers={"authorization": "Bearer t"})
        assert len(listed.json()["plugins"]) == len(load_manifest(MANIFEST).plugins)
    assert runtime.plugins == []  # leaving the block unloads, like a lifespan shutdown


def test_a_plugin_that_fails_to_load_raises_unless_not_strict(tmp_path: Path) -> None:
    manifest = write_plugins(tmp_path, broken="def on_request(:\n", ok=OK)
    with pytest.raises(PluginLoadError, match="plug-in 'broken' failed to load: syntax error"):
        TestClient(manifest).start()
    with pytest.raises(PluginLoadError), TestClient(manifest):
        pass
    with TestClient(manifest, strict=False) as client:
        assert client.get("/ok").text == "ok"
        assert client.get("/broken").status_code == 503


def test_rejects_two_manifests(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="give the manifest once"):
        TestClient(MANIFEST, MANIFEST)


def test_loads_on_first_request_and_close_stops_the_thread(tmp_path: Path) -> None:
    def client_threads() -> int:
        return sum(t.name == "valor-test-client" for t in threading.enumerate())

    before = client_threads()
    client = TestClient(write_plugins(tmp_path, ok=OK))
    assert client.get("/ok").text == "ok"
    assert client_threads() == before + 1
    client.close()
    client.close()  # closing twice is harmless
    assert client_threads() == before


def test_works_while_an_event_loop_runs() -> None:
    """As in an async test: the client keeps its own loop and leaves the caller's alone."""

    async def async_test() -> str:
        with TestClient(MANIFEST) as client:
            return client.get("/hello").text

    with ThreadPoolExecutor(1) as pool:  # a thread of its own, whatever the session left running
        assert pool.submit(asyncio.run, async_test()).result() == "Hello Plugin!"


def test_worker_style_answers_posted_from_a_task(tmp_path: Path) -> None:
    manifest = write_plugins(
        tmp_path,
        later=(
            "import asyncio\n\n"
            "async def onmessage(event):\n"
            "    async def answer():\n"
            "        await asyncio.sleep(0.01)\n"
            "        postMessage({'status': 202, 'body': 'later'})\n"
            "    asyncio.get_running_loop().create_task(answer())\n"
        ),
    )
    with TestClient(manifest) as client:
        answer = client.get("/later")
    assert (answer.status_code, answer.text) == (202, "later")


# -- the pytest plug-in: valor_host runs a test on the server host and in Chromium ------------

NOT_INTERCEPTED = {"prefix-boundary", "not-found"}  # unmounted paths go to the static host


def test_the_shared_table_on_both_hosts(valor_host: httpx.Client) -> None:
    cases = (
        CASES
        if valor_host.name == "server"
        else [case for case in CASES if case.id not in NOT_INTERCEPTED]
    )

    def send(case: Case) -> Answer:
        response = valor_host.request(
            case.method, case.path, headers=case.headers, content=case.body
        )
        return Answer(response.status_code, response.headers, response.content)

    run_cases(send, cases)


TWO_HOST_TEST = """
def test_greets(valor_host):
    answer = valor_host.get("/weather", params={"who": "Ann"})
    assert answer.status_code == 200
    assert answer.headers["x-valor-plugin"] == "weather"
    assert answer.text == "Hello Ann, from weather!"
"""


def author_project(folder: Path) -> Path:
    """A plug-in author's project: ``valor new weather`` and a test using ``valor_host``."""
    done = subprocess.run(
        [sys.executable, "-m", "valor.cli", "new", "weather"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    (folder / "tests" / "test_hosts.py").write_text(TWO_HOST_TEST)
    return folder


def run_pytest(folder: Path, *args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_a_server_host_that_cannot_start_says_why(tmp_path: Path) -> None:
    manifest = tmp_path / "plugins.json"
    manifest.write_text('{"plugins": [{"name": "x", "type": "python"}]}')
    with pytest.raises(HostError, match=r"(?s)exited with .*plug-in 'x': 'path' is required"):
        ServerHost(manifest, log_dir=tmp_path).start()


def test_plugin_authors_get_both_hosts(tmp_path: Path) -> None:
    project = author_project(tmp_path)
    done = run_pytest(project, "tests/test_hosts.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED tests/test_hosts.py::test_greets[server]" in done.stdout
    assert "PASSED tests/test_hosts.py::test_greets[browser]" in done.stdout

    # A plug-in that answers wrongly fails on both hosts.
    source = project / "plugins" / "weather.py"
    source.write_text(source.read_text().replace("Hello", "Bye"))
    failed = run_pytest(project, "tests/test_hosts.py")
    assert failed.returncode == 1
    assert "FAILED tests/test_hosts.py::test_greets[server]" in failed.stdout
    assert "FAILED tests/test_hosts.py::test_greets[browser]" in failed.stdout


def test_hosts_can_be_chosen(tmp_path: Path) -> None:
    project = author_project(tmp_path)
    done = run_pytest(project, "tests/test_hosts.py", "--valor-hosts=server")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "[browser]" not in done.stdout
    wrong = run_pytest(project, "tests/test_hosts.py", "--valor-hosts=servre")
    assert wrong.returncode != 0
    assert "unknown host 'servre'" in wrong.stderr + wrong.stdout


def test_the_browser_run_skips_only_without_playwright(tmp_path: Path) -> None:
    project = author_project(tmp_path)
    shim = tmp_path / "no-playwright" / "playwright"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('playwright is blocked for this test')\n")
    done = run_pytest(
        project,
        "tests/test_hosts.py",
        "-p",
        "no:playwright",  # pytest-playwright itself would import the blocked module
        env={"PYTHONPATH": str(shim.parent)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout
    assert "the browser host needs Playwright" in done.stdout


def test_a_broken_bundle_fails_rather_than_skips(tmp_path: Path) -> None:
    project = author_project(tmp_path)
    (project / "plugins" / "weather.py").unlink()  # the build refuses a missing file
    done = run_pytest(project, "tests/test_hosts.py", "--valor-hosts=browser")
    assert done.returncode == 1
    assert "ERROR tests/test_hosts.py::test_greets[browser]" in done.stdout
    assert "skipped" not in done.stdout


def test_the_pytest_plugin_is_registered_and_imports_nothing_heavy() -> None:
    probe = (
        "import importlib.metadata as m, sys\n"
        "entry = {e.name: e.value for e in m.entry_points(group='pytest11')}['valor']\n"
        "import valor.testing.pytest_plugin\n"
        "heavy = ['httpx', 'playwright', 'uvicorn', 'wasmtime', 'starlette', 'valor.server',\n"
        "         'valor.build', 'valor.testing.hosts']\n"
        "print(entry, [name for name in heavy if name in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "valor.testing.pytest_plugin []", done.stderr
