"""The ``asgi`` kind in-process: lifespan at load and close, apps without lifespan, load errors
naming the plug-in, and an app's failures answered by the runtime like any plug-in's. The
examples' answers over real HTTP, in both hosts, are in the shared table (``tests/cases.py``)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from valor.errors import PluginLoadError
from valor.kinds.asgi.core import load_asgi
from valor.manifest import parse_manifest
from valor.runtime import Runtime

pytestmark = pytest.mark.anyio

BARE = """
async def app(scope, receive, send):
    assert scope["type"] == "http", "no lifespan here"
    body = (await receive())["body"]
    info = {key: scope[key] for key in ("path", "root_path", "query_string", "method")}
    info["query_string"] = info["query_string"].decode()
    info["body"] = body.decode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"x-app", b"bare")]})
    await send({"type": "http.response.body", "body": __import__("json").dumps(info).encode()})
"""

LIFESPAN = """
import pathlib

LOG = pathlib.Path(__file__).with_name("lifespan.log")

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "started"
                LOG.write_text("startup\\n")
                await send({"type": "lifespan.startup.complete"})
            else:
                LOG.write_text(LOG.read_text() + "shutdown\\n")
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": scope["state"]["greeting"].encode()})
"""

FAILING_STARTUP = """
async def app(scope, receive, send):
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})
"""

MISBEHAVING = """
import asyncio

async def app(scope, receive, send):
    if scope["path"].endswith("/raise"):
        raise ValueError("boom")
    if scope["path"].endswith("/silent"):
        return
    if scope["path"].endswith("/hang"):
        await asyncio.sleep(60)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
"""


async def runtime_with(tmp_path: Path, sources: dict[str, str], **extra) -> Runtime:
    plugins = []
    for name, source in sources.items():
        (tmp_path / f"{name}.py").write_text(source)
        plugins.append({"name": name, "type": "asgi", "path": f"{name}.py", **extra})
    runtime = Runtime({"asgi": load_asgi})
    await runtime.load(parse_manifest({"plugins": plugins}, tmp_path), strict=True)
    return runtime


def request(url: str, method: str = "GET", body: bytes | None = None) -> dict:
    return {"url": url, "method": method, "headers": [], "body": body}


async def test_an_app_without_lifespan_gets_the_prefix_as_root_path(tmp_path: Path) -> None:
    runtime = await runtime_with(tmp_path, {"bare": BARE})
    answer = await runtime.handle(request("http://h/bare/a%20b/c?x=1", "POST", b"hi"))
    assert answer["status"] == 200, answer
    assert json.loads(answer["body"]) == {
        "path": "/bare/a b/c",
        "root_path": "/bare",
        "query_string": "x=1",
        "method": "POST",
        "body": "hi",
    }
    assert ["x-app", "bare"] in answer["headers"]
    assert ["x-valor-plugin", "bare"] in answer["headers"]
    await runtime.close()


async def test_lifespan_starts_at_load_and_shuts_down_at_close(tmp_path: Path) -> None:
    runtime = await runtime_with(tmp_path, {"life": LIFESPAN})
    assert (tmp_path / "lifespan.log").read_text() == "startup\n"
    answer = await runtime.handle(request("http://h/life"))
    assert answer["body"] == b"started"  # the state lifespan set, in every request's scope
    await runtime.close()
    assert (tmp_path / "lifespan.log").read_text() == "startup\nshutdown\n"


async def test_a_failed_startup_is_a_load_error_naming_the_plugin(tmp_path: Path) -> None:
    with pytest.raises(PluginLoadError) as caught:
        await runtime_with(tmp_path, {"broken": FAILING_STARTUP})
    assert "'broken'" in str(caught.value) and "no database" in str(caught.value)


@pytest.mark.parametrize(
    ("source", "app", "reason"),
    [
        (BARE, "application", "has no ASGI application named 'application'"),
        ("x = 1 +", "app", "syntax error"),
        ("import not_a_module_anywhere", "app", "ModuleNotFoundError"),
    ],
)
async def test_a_module_without_its_app_is_a_load_error(
    tmp_path: Path, source: str, app: str, reason: str
) -> None:
    with pytest.raises(PluginLoadError) as caught:
        await runtime_with(tmp_path, {"nope": source}, app=app)
    assert "'nope'" in str(caught.value) and reason in str(caught.value)


async def test_app_failures_are_the_runtimes_answers(tmp_path: Path) -> None:
    (tmp_path / "bad.py").write_text(MISBEHAVING)
    plugins = [{"name": "bad", "type": "asgi", "path": "bad.py", "timeout": 0.3}]
    runtime = Runtime({"asgi": load_asgi})
    await runtime.load(parse_manifest({"plugins": plugins}, tmp_path), strict=True)
    raised = await runtime.handle(request("http://h/bad/raise"))
    assert raised["status"] == 500 and "'bad' raised" in json.loads(raised["body"])["detail"]
    silent = await runtime.handle(request("http://h/bad/silent"))
    assert silent["status"] == 500 and len(json.loads(silent["body"])["error_id"]) == 12
    hung = await runtime.handle(request("http://h/bad/hang"))
    assert hung["status"] == 504, hung
    assert (await runtime.handle(request("http://h/bad/ok")))["body"] == b"ok"
    await runtime.close()


def test_app_is_only_for_the_asgi_kind(tmp_path: Path) -> None:
    from valor.errors import ManifestError

    with pytest.raises(ManifestError, match="'app' is only for type 'asgi'"):
        parse_manifest({"plugins": [{"name": "p", "type": "python", "path": "p.py", "app": "a"}]},
                       tmp_path)  # fmt: skip
    with pytest.raises(ManifestError, match="must name a module attribute"):
        parse_manifest({"plugins": [{"name": "p", "type": "asgi", "path": "p.py", "app": "1x"}]},
                       tmp_path)  # fmt: skip


def write_package(folder: Path, files: dict[str, str]) -> None:
    for name, source in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(source)


def package(name: str) -> dict[str, str]:
    """A package ``name`` whose ``main`` module's app imports from a module beside it (each
    test its own name: a process imports a package once)."""
    main = "from .models import GREETING\n" + BARE.replace(
        'info["body"] = ', 'info["greeting"] = GREETING\n    info["body"] = '
    )
    return {
        f"{name}/__init__.py": "",
        f"{name}/models.py": "GREETING = 'hello from a package'\n",
        f"{name}/main.py": main,
    }


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    "entry",
    [
        {"app": "library.main:app"},  # as uvicorn's library.main:app
        {"path": "library/main.py"},  # a file inside a package imports as its module
    ],
)
async def test_an_app_in_a_package_imports_as_its_module(tmp_path: Path, entry: dict) -> None:
    name = "library_" + entry["app"].partition(".")[0] if "app" in entry else "library_path"
    write_package(tmp_path, package(name))
    entry = {key: value.replace("library", name) for key, value in entry.items()}
    plugins = [{"name": "lib", "type": "asgi", **entry}]
    runtime = Runtime({"asgi": load_asgi})
    await runtime.load(parse_manifest({"plugins": plugins}, tmp_path), strict=True)
    answer = await runtime.handle(request("http://h/lib/x"))
    assert json.loads(answer["body"])["greeting"] == "hello from a package", answer
    await runtime.close()


@pytest.mark.timeout(30)
async def test_load_errors_name_the_file_that_failed(tmp_path: Path) -> None:
    write_package(tmp_path, {**package("broken"), "broken/models.py": "\n\nGREETING = (\n"})
    with pytest.raises(PluginLoadError) as caught:
        await runtime_with_entry(tmp_path, {"app": "broken.main:app"})
    assert f"syntax error in {tmp_path / 'broken' / 'models.py'} line 3" in str(caught.value)
    write_package(tmp_path, {**package("raising"), "raising/models.py": "\n1 / 0\n"})
    with pytest.raises(PluginLoadError) as caught:
        await runtime_with_entry(tmp_path, {"app": "raising.main:app"})
    assert "ZeroDivisionError: division by zero at raising/models.py:2" in str(caught.value)


@pytest.mark.timeout(30)
async def test_a_wrong_app_name_lists_what_the_module_has(tmp_path: Path) -> None:
    write_package(
        tmp_path, {"api.py": "import json\nfrom json import dumps\n" + BARE + "other = app\n"}
    )
    with pytest.raises(PluginLoadError) as caught:
        await runtime_with_entry(tmp_path, {"path": "api.py", "app": "application"})
    message = str(caught.value)
    assert "api.py has no ASGI application named 'application'; it has app, other" in message
    assert "(set 'app')" not in message
    with pytest.raises(PluginLoadError, match=r"named 'app' \(the default; set 'app'\)"):
        await runtime_with_entry(tmp_path, {"path": "api.py", "name": "two"} | {}, app=None)


def test_a_module_that_is_not_there_is_a_manifest_error(tmp_path: Path) -> None:
    from valor.errors import ManifestError

    with pytest.raises(ManifestError, match=r"names module 'nowhere\.main', which is not in"):
        parse_manifest({"plugins": [{"name": "p", "type": "asgi", "app": "nowhere.main:app"}]},
                       tmp_path)  # fmt: skip


@pytest.mark.timeout(30)
async def test_a_package_already_imported_from_elsewhere_is_refused(tmp_path: Path) -> None:
    write_package(tmp_path, {"json/__init__.py": "", "json/main.py": BARE})
    with pytest.raises(PluginLoadError, match="'json' is already imported from"):
        await runtime_with_entry(tmp_path, {"app": "json.main:app"})


async def runtime_with_entry(tmp_path: Path, entry: dict, app: str | None = "app") -> Runtime:
    plugin = {"name": "p", "type": "asgi", **entry}
    if app is None:
        plugin.pop("app", None)
        (tmp_path / "api.py").write_text("x = 1\n")
    runtime = Runtime({"asgi": load_asgi})
    await runtime.load(parse_manifest({"plugins": [plugin]}, tmp_path), strict=True)
    return runtime


@pytest.mark.timeout(30)
async def test_a_python_plugin_in_a_package_imports_its_helpers(tmp_path: Path) -> None:
    # The same import machinery for the python kind: relative imports, and errors that name
    # the helper module that failed.
    from valor.kinds.python.core import load_python

    plugin = (
        "from valor import vlugin\nfrom .words import WORD\n\n"
        "@vlugin\ndef on_request(req):\n    return WORD\n"
    )
    write_package(tmp_path, {"tools/__init__.py": "", "tools/words.py": "WORD = 'helped'\n",
                             "tools/plugin.py": plugin})  # fmt: skip
    runtime = Runtime({"python": load_python})
    entry = {"name": "tools", "type": "python", "path": "tools/plugin.py"}
    await runtime.load(parse_manifest({"plugins": [entry]}, tmp_path), strict=True)
    assert (await runtime.handle(request("http://h/tools")))["body"] == b"helped"
    await runtime.close()
    write_package(tmp_path, {"kit/__init__.py": "", "kit/words.py": "WORD = [\n",
                             "kit/plugin.py": plugin})  # fmt: skip
    entry = {"name": "kit", "type": "python", "path": "kit/plugin.py"}
    with pytest.raises(PluginLoadError, match=r"syntax error in .*kit/words\.py line 1"):
        await Runtime({"python": load_python}).load(
            parse_manifest({"plugins": [entry]}, tmp_path), strict=True
        )


ENDLESS = """
SENT = [0]

async def app(scope, receive, send):
    assert scope["type"] == "http", "no lifespan here"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        await send({"type": "http.response.body", "body": b"x" * 1024, "more_body": True})
        SENT[0] += 1
"""


@pytest.mark.timeout(30)
async def test_a_stream_runs_ahead_of_its_reader_only_so_far(tmp_path: Path) -> None:
    # Parts wait to be taken while they hold at most Exchange.AHEAD bytes: many small parts
    # are ready together, and an app faster than its client is held there.
    import asyncio

    from valor.kinds.asgi.core import Exchange

    runtime = await runtime_with(tmp_path, {"endless": ENDLESS})
    answer = await runtime.handle(request("http://h/endless"))
    stream = answer["body"]
    sent = runtime.table.mounts["endless"].plugin.app.__globals__["SENT"]  # type: ignore[attr-defined]
    ahead = Exchange.AHEAD // 1024

    async def turns(count: int = 200) -> None:  # the loop's turns, in which it could go on
        for _ in range(count):
            await asyncio.sleep(0)

    await turns()
    assert ahead <= sent[0] <= ahead + 2, sent
    parts = [await stream.__anext__() for _ in range(10)]
    assert all(part == b"x" * 1024 for part in parts[1:])
    await turns()
    assert ahead + 8 <= sent[0] <= ahead + 12, sent  # taking parts lets it on, to the bound
    await stream.aclose()
    await runtime.close()


# Apps that take every scope for a request, lifespan's too (issue 23): one waits for the
# request's body, the other answers at once. uvicorn refuses an HTTP event on the lifespan
# scope (the app raises: no lifespan support); the one that waits would wait forever there.
WAITS_FOR_ITS_REQUEST = """
async def app(scope, receive, send):
    while True:  # until the whole body is in
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if message["type"] == "http.request" and not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"waited"})
"""

ANSWERS_AT_ONCE = """
import pathlib

LOG = pathlib.Path(__file__).with_name("answers.log")

async def app(scope, receive, send):
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"at once"})
    except Exception as exc:
        with LOG.open("a") as log:
            log.write(f"{scope['type']}: {exc}\\n")
        raise
"""


@pytest.mark.timeout(60)
async def test_an_app_that_takes_lifespan_for_a_request_loads_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="valor.plugins")
    sources = {"waits": WAITS_FOR_ITS_REQUEST, "answers": ANSWERS_AT_ONCE}
    # Its timeout far above the test's own: a start that waits for it fails the test.
    runtime = await runtime_with(tmp_path, sources, timeout=120)
    try:
        assert runtime.failures == []
        waited = await runtime.handle(request("http://h/waits", "POST", b"x"))
        assert (waited["status"], waited["body"]) == (200, b"waited")
        answered = await runtime.handle(request("http://h/answers"))
        assert (answered["status"], answered["body"]) == (200, b"at once")
        # Its HTTP event on the lifespan scope was refused, as uvicorn refuses it.
        refused = (tmp_path / "answers.log").read_text()
        assert refused.startswith("lifespan: ") and "http.response.start" in refused
        said = [
            r.getMessage() for r in caplog.records if "does not support lifespan" in r.getMessage()
        ]
        assert said == [
            "plug-in 'waits': the app asked for another event before it replied to "
            "lifespan.startup; it does not support lifespan: requests only"
        ]
    finally:
        await asyncio.wait_for(runtime.close(), 30)  # and nothing of it is left to wait for
