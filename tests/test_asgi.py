"""The ``asgi`` kind in-process: lifespan at load and close, apps without lifespan, load errors
naming the plug-in, and an app's failures answered by the runtime like any plug-in's. The
examples' answers over real HTTP, in both hosts, are in the shared table (``tests/cases.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from valor.errors import PluginLoadError
from valor.loaders.asgi import load_asgi
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
