"""The runtime in-process: routing, headers, built-ins, limits and failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from tests.loops import NoPastLoop, busy_clock
from valor.errors import PluginCrashed, PluginLoadError
from valor.kinds.python.core import load_python
from valor.manifest import parse_manifest
from valor.runtime import Runtime

pytestmark = pytest.mark.anyio

HELLO = "from valor import vlugin\n@vlugin\ndef on_request(req):\n    return {name!r} + req.path\n"


def write(folder: Path, name: str, source: str) -> str:
    (folder / f"{name}.py").write_text(source)
    return f"{name}.py"


async def runtime_with(tmp_path: Path, plugins: list[dict], **options) -> Runtime:
    runtime = Runtime({"python": load_python}, **options)
    await runtime.load(parse_manifest({"plugins": plugins}, tmp_path))
    return runtime


def request(url: str, method: str = "GET", body: bytes | None = None, headers=()) -> dict:
    return {"url": url, "method": method, "headers": list(headers), "body": body}


def header(answer: dict, name: str) -> str | None:
    return next((v for k, v in answer["headers"] if k.lower() == name), None)


async def test_longest_prefix_wins_and_prefix_is_stripped(tmp_path: Path) -> None:
    for name in ("api", "v2", "root"):
        write(tmp_path, name, HELLO.format(name=name))
    runtime = await runtime_with(
        tmp_path,
        [
            {"name": "api", "type": "python", "path": "api.py", "prefix": "/api"},
            {"name": "v2", "type": "python", "path": "v2.py", "prefix": "/api/v2"},
            {"name": "root", "type": "python", "path": "root.py", "prefix": "/"},
        ],
    )
    cases = {
        "/api": b"api/",
        "/api/x": b"api/x",
        "/api/v2": b"v2/",
        "/api/v2/users/1": b"v2/users/1",
        "/api/v20": b"api/v20",
        "/other": b"root/other",
    }
    for path, body in cases.items():
        answer = await runtime.handle(request("http://h" + path))
        assert answer["body"] == body, path
    assert runtime.intercept_prefixes == ["/_health", "/api/v2", "/api", "/"]


async def test_root_path_and_forwarded_prefix(tmp_path: Path) -> None:
    write(
        tmp_path,
        "show",
        "from valor import vlugin\n@vlugin\ndef on_request(req):\n"
        "    return {'url': req.url, 'prefix': req.prefix, 'id': req.headers['x-request-id']}\n",
    )
    runtime = await runtime_with(
        tmp_path, [{"name": "show", "type": "python", "path": "show.py"}], root_path="/sub/"
    )
    answer = await runtime.handle(request("http://h/sub/show/a?q=1"))
    data = json.loads(answer["body"])
    assert data["url"] == "http://h/a?q=1"
    assert data["prefix"] == "/sub/show"
    assert data["id"] == header(answer, "x-correlation-id")
    assert (await runtime.handle(request("http://h/show/a")))["status"] == 404
    assert runtime.intercept_prefixes == ["/sub/_health", "/sub/show"]


async def test_worker_style_sync_and_async_and_late_post(tmp_path: Path) -> None:
    write(
        tmp_path,
        "sync_worker",
        "def onmessage(event):\n"
        "    postMessage({'status': 201, 'headers': [['a', 'b']], 'body': event.data['method']})\n",
    )
    write(
        tmp_path,
        "async_worker",
        "import asyncio\n"
        "async def later(body):\n"
        "    await asyncio.sleep(0.01)\n"
        "    postMessage({'status': 200, 'body': body})\n"
        "tasks = set()\n"
        "async def onmessage(event):\n"
        "    tasks.add(asyncio.create_task(later(event['data']['body'])))\n",
    )
    runtime = await runtime_with(
        tmp_path,
        [
            {"name": "s", "type": "python", "path": "sync_worker.py"},
            {"name": "a", "type": "python", "path": "async_worker.py"},
        ],
    )
    sync_answer = await runtime.handle(request("http://h/s", "DELETE"))
    assert (sync_answer["status"], sync_answer["body"]) == (201, b"DELETE")
    assert ["a", "b"] in sync_answer["headers"]
    async_answer = await runtime.handle(request("http://h/a", "POST", b"\x00\xff"))
    assert async_answer["body"] == b"\x00\xff"


async def test_invalid_answers_and_crashes(tmp_path: Path) -> None:
    write(tmp_path, "bad", "def onmessage(event):\n    postMessage({'status': 'ok'})\n")
    write(
        tmp_path,
        "weird",
        "from valor import vlugin\n@vlugin\ndef on_request(req):\n    return 1.5\n",
    )
    runtime = await runtime_with(
        tmp_path,
        [
            {"name": "bad", "type": "python", "path": "bad.py"},
            {"name": "weird", "type": "python", "path": "weird.py"},
        ],
    )
    bad = await runtime.handle(request("http://h/bad"))
    assert bad["status"] == 500
    assert "answered an invalid response" in json.loads(bad["body"])["detail"]
    weird = await runtime.handle(request("http://h/weird"))
    assert weird["status"] == 500
    assert header(weird, "x-valor-plugin") == "weird"

    class Crashing:
        async def handle(self, message):
            raise PluginCrashed("worker exited with code 1")

        async def close(self):
            return None

    async def load_crashing(spec):
        return Crashing()

    runtime.loaders["js"] = load_crashing
    from valor.manifest import parse_plugin

    await runtime.add(parse_plugin({"name": "c", "type": "js", "path": "c.js"}, tmp_path))
    crashed = await runtime.handle(request("http://h/c"))
    assert crashed["status"] == 502
    detail = json.loads(crashed["body"])
    assert detail["detail"] == "plug-in 'c' crashed" and detail["error_id"]  # why: in the log


async def test_timeout_and_body_limit(tmp_path: Path) -> None:
    write(
        tmp_path,
        "slow",
        "import asyncio\nfrom valor import vlugin\n@vlugin\nasync def on_request(req):\n"
        "    await asyncio.sleep(10)\n",
    )
    write(tmp_path, "hello", HELLO.format(name="hello"))
    runtime = await runtime_with(
        tmp_path,
        [
            {"name": "slow", "type": "python", "path": "slow.py", "timeout": 0.1},
            {"name": "hello", "type": "python", "path": "hello.py"},
        ],
        max_body_size=10,
    )
    slow = await runtime.handle(request("http://h/slow"))
    assert slow["status"] == 504
    assert "within 0.1 seconds" in json.loads(slow["body"])["detail"]
    big = await runtime.handle(request("http://h/hello", "POST", b"x" * 11))
    assert big["status"] == 413
    assert (await runtime.handle(request("http://h/hello", "POST", b"x" * 10)))["status"] == 200


async def test_load_failures_are_reported_and_others_load(tmp_path: Path) -> None:
    write(tmp_path, "hello", HELLO.format(name="hello"))
    write(tmp_path, "undecorated", "def on_request(req):\n    return 'x'\n")
    write(tmp_path, "nothing", "X = 1\n")
    write(
        tmp_path,
        "create_fails",
        "from valor import vlugin\n@vlugin\ndef on_create(ctx):\n    raise ValueError('no db')\n"
        "@vlugin\ndef on_request(ctx, req):\n    return 'x'\n",
    )
    write(tmp_path, "import_fails", "import not_a_module_anywhere\n")
    plugins = [
        {"name": "undecorated", "type": "python", "path": "undecorated.py"},
        {"name": "nothing", "type": "python", "path": "nothing.py"},
        {"name": "create_fails", "type": "python", "path": "create_fails.py"},
        {"name": "import_fails", "type": "python", "path": "import_fails.py"},
        {"name": "native", "type": "native", "path": "x.so"},
        {"name": "hello", "type": "python", "path": "hello.py"},
    ]
    runtime = Runtime({"python": load_python})
    failures = await runtime.load(parse_manifest({"plugins": plugins}, tmp_path))
    messages = [str(failure) for failure in failures]
    assert messages == [
        "plug-in 'undecorated' failed to load: on_request must be decorated with @vlugin",
        "plug-in 'nothing' failed to load: the module defines neither an @vlugin request "
        "handler nor onmessage(event)",
        "plug-in 'create_fails' failed to load: on_create raised ValueError: no db at "
        "create_fails.py:4",
        messages[3],
        "plug-in 'native' failed to load: type 'native' is not supported by this host "
        "(supported: python)",
    ]
    assert "ModuleNotFoundError: No module named 'not_a_module_anywhere'" in messages[3]
    assert [spec.name for spec in runtime.plugins] == ["hello"]

    strict = Runtime({"python": load_python})
    with pytest.raises(PluginLoadError, match="native"):
        await strict.load(parse_manifest({"plugins": plugins[::-1]}, tmp_path), strict=True)
    assert strict.plugins == []


async def test_registry_changes_notify_subscribers(tmp_path: Path) -> None:
    write(tmp_path, "hello", HELLO.format(name="hello"))
    runtime = await runtime_with(tmp_path, [], registry=True)
    seen: list[list[str]] = []
    runtime.subscribe(lambda: seen.append(runtime.intercept_prefixes))
    added = await runtime.handle(
        request(
            "http://h/_plugins", "POST", b'{"name": "hi", "type": "python", "path": "hello.py"}'
        )
    )
    assert added["status"] == 201, added["body"]
    assert (await runtime.handle(request("http://h/hi/x")))["body"] == b"hello/x"
    removed = await runtime.handle(request("http://h/_plugins/hi", "DELETE"))
    assert removed["status"] == 200
    assert seen == [["/_health", "/_plugins", "/hi"], ["/_health", "/_plugins"]]
    wrong = await runtime.handle(request("http://h/_plugins", "PUT"))
    assert wrong["status"] == 405
    assert header(wrong, "allow") == "GET, POST"


async def test_state_is_kept_between_requests(tmp_path: Path) -> None:
    write(
        tmp_path,
        "counter",
        "from valor import vlugin\n@vlugin\nasync def on_create(ctx):\n"
        "    ctx.state.count = ctx.config['start']\n"
        "@vlugin\ndef count(ctx, req):\n"
        "    ctx.state.count += 1\n    return str(ctx.state.count)\n",
    )
    runtime = await runtime_with(
        tmp_path, [{"name": "c", "type": "python", "path": "counter.py", "config": {"start": 41}}]
    )
    assert (await runtime.handle(request("http://h/c")))["body"] == b"42"
    assert (await runtime.handle(request("http://h/c")))["body"] == b"43"


class Named:
    """A plug-in that answers its name, and notes in ``closed`` when it is closed."""

    def __init__(self, name: str, closed: list[str]) -> None:
        self.name = name
        self.closed = closed

    async def handle(self, message: dict) -> dict:
        return {"status": 200, "headers": [], "body": self.name.encode()}

    async def close(self) -> None:
        self.closed.append(self.name)


async def test_plugins_load_side_by_side_and_mount_in_manifest_order(tmp_path: Path) -> None:
    # "first" can only finish loading once "second" has started: loading them one after the
    # other would never get there.
    second_started = anyio.Event()
    closed: list[str] = []

    async def load(spec):
        if spec.name == "first":
            with anyio.fail_after(10):
                await second_started.wait()
        else:
            second_started.set()
        if spec.name == "broken":
            raise PluginLoadError(spec.name, "no good")
        return Named(spec.name, closed)

    plugins = [{"name": n, "type": "python", "path": "x.py"} for n in ("first", "second", "broken")]
    (tmp_path / "x.py").write_text("")
    runtime = Runtime({"python": load})
    failures = await runtime.load(parse_manifest({"plugins": plugins}, tmp_path))
    assert [spec.name for spec in runtime.plugins] == ["first", "second"]
    assert [failure.plugin for failure in failures] == ["broken"]
    assert (await runtime.handle(request("http://h/second")))["body"] == b"second"

    strict = Runtime({"python": load})
    second_started = anyio.Event()
    with pytest.raises(PluginLoadError):
        await strict.load(parse_manifest({"plugins": plugins}, tmp_path), strict=True)
    assert strict.plugins == []
    assert sorted(closed) == ["first", "second"]  # what did load is closed again


@pytest.mark.parametrize(
    ("pause", "order"), [(0.0, ["a", "b", "answer"]), (0.3, ["a", "answer", "b"])]
)
async def test_a_pause_between_starts_lets_a_waiting_request_go_first(
    tmp_path: Path, pause: float, order: list[str]
) -> None:
    # The browser host pauses between two plug-ins' starts: a request to the first one is
    # answered before the second one starts loading. Without a pause, the starts come first.
    events: list[str] = []

    async def load(spec):
        events.append(spec.name)
        return Named(spec.name, [])

    plugins = [{"name": n, "type": "python", "path": "x.py"} for n in ("a", "b")]
    (tmp_path / "x.py").write_text("")
    runtime = Runtime({"python": load})
    loading = runtime.start_loading(parse_manifest({"plugins": plugins}, tmp_path), pause=pause)
    with anyio.fail_after(10):
        assert (await runtime.handle(request("http://h/a/x")))["body"] == b"a"
        events.append("answer")
        await loading
    assert events == order


async def test_starts_wait_for_a_quiet_moment_but_a_wanted_plugin_starts_at_once(
    tmp_path: Path,
) -> None:
    # The browser host's way: a plug-in's start (a new Web Worker) would slow the page's first
    # answers, so after the first one each waits until no request has come for `quiet`; a
    # request for one not started yet starts it next, without waiting.
    events: list[str] = []

    async def load(spec):
        events.append(spec.name)
        return Named(spec.name, [])

    plugins = [{"name": n, "type": "python", "path": "x.py"} for n in ("a", "b", "c")]
    (tmp_path / "x.py").write_text("")
    runtime = Runtime({"python": load})
    manifest = parse_manifest({"plugins": plugins}, tmp_path)
    # `quiet` is long beside the 0.2 s below, so a busy machine cannot outwait it.
    loading = runtime.start_loading(manifest, pause=0.001, quiet=3, patience=20)
    with anyio.fail_after(10):
        assert (await runtime.handle(request("http://h/a/x")))["body"] == b"a"
        assert events == ["a"]  # b and c wait
        assert (await runtime.handle(request("http://h/c/x")))["body"] == b"c"
        assert events == ["a", "c"]  # asked for: started at once
        await anyio.sleep(0.2)
        assert events == ["a", "c"]  # still within `quiet` of the last request
        await loading
    assert events == ["a", "c", "b"]
    assert [spec.name for spec in runtime.plugins] == ["a", "b", "c"]  # the manifest's order


async def test_starts_wait_for_quiet_no_longer_than_the_patience(tmp_path: Path) -> None:
    plugins = [{"name": n, "type": "python", "path": "x.py"} for n in ("a", "b", "c")]
    (tmp_path / "x.py").write_text("")
    runtime = Runtime({"python": lambda spec: _named(spec)})
    manifest = parse_manifest({"plugins": plugins}, tmp_path)
    started = anyio.current_time()
    with anyio.fail_after(5):  # `quiet` alone would hold each start for 60 s
        await runtime.start_loading(manifest, pause=0.001, quiet=60, patience=0.2)
    assert 0.2 <= anyio.current_time() - started < 2
    assert len(runtime.plugins) == 3


async def _named(spec) -> Named:
    return Named(spec.name, [])


async def test_requests_are_answered_while_slower_plugins_still_load(tmp_path: Path) -> None:
    # "slow" and "broken" finish loading only when the test says so: meanwhile "fast" answers,
    # and requests to the other two (and the built-ins) wait, then get the answers they would
    # get after the load.
    release = anyio.Event()
    notified: list[list[str]] = []

    async def load(spec):
        if spec.name != "fast":
            await release.wait()
        if spec.name == "broken":
            raise PluginLoadError(spec.name, "no good")
        return Named(spec.name, [])

    names = ("slow", "fast", "broken")
    plugins = [{"name": n, "type": "python", "path": "x.py"} for n in names]
    (tmp_path / "x.py").write_text("")
    runtime = Runtime({"python": load}, registry=True)
    runtime.subscribe(lambda: notified.append(runtime.intercept_prefixes))
    loading = runtime.start_loading(parse_manifest({"plugins": plugins}, tmp_path))
    assert runtime.intercept_prefixes == ["/_health", "/_plugins", "/slow", "/fast", "/broken"]

    with anyio.fail_after(10):
        assert (await runtime.handle(request("http://h/fast/x")))["body"] == b"fast"
    waiting = {path: anyio.Event() for path in ("/slow/x", "/broken/x", "/_health", "/_plugins")}
    answers: dict[str, dict] = {}

    async def send(path: str) -> None:
        answers[path] = await runtime.handle(request(f"http://h{path}"))

    async with anyio.create_task_group() as tasks:
        for path in waiting:
            tasks.start_soon(send, path)
        await anyio.sleep(0.05)
        assert answers == {} and runtime.plugins == [runtime.plugins[0]]  # only "fast"
        release.set()
    assert answers["/slow/x"]["body"] == b"slow"
    broken = answers["/broken/x"]  # its failure, named, as if the load had finished first
    assert broken["status"] == 503
    assert json.loads(broken["body"])["detail"] == "plug-in 'broken' failed to load: no good"
    health = json.loads(answers["/_health"]["body"])
    assert health["plugins"] == 2
    assert health["failed"] == [
        {"name": "broken", "prefix": "/broken", "error": "plug-in 'broken' failed to load: no good"}
    ]
    listed = json.loads(answers["/_plugins"]["body"])["plugins"]
    assert [plugin["name"] for plugin in listed] == ["slow", "fast"]  # the manifest's order
    assert [failure.plugin for failure in await loading] == ["broken"]
    # Once, at the end; the failed plug-in's prefix stays intercepted, for its 503.
    assert notified == [["/_health", "/_plugins", "/broken", "/slow", "/fast"]]  # longest first


class TimerlessLoop(asyncio.SelectorEventLoop):
    """A loop whose timers fail: a fault in the scheduler of the plug-ins' starts."""

    def call_later(self, delay, callback, *args, context=None):  # type: ignore[no-untyped-def]
        raise RuntimeError("no timers on this loop")


def busy_loop() -> asyncio.AbstractEventLoop:
    loop = NoPastLoop()
    loop.time = busy_clock(0.02)  # type: ignore[method-assign]
    return loop


@pytest.mark.parametrize("new_loop", [busy_loop, TimerlessLoop], ids=["busy clock", "no timers"])
@pytest.mark.filterwarnings("ignore:coroutine 'Event.wait' was never awaited")  # refused timer
def test_a_fault_in_holding_the_starts_never_costs_the_manifest_its_mounts(
    tmp_path: Path, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    # A busy browser worker, before its loop was mended: the clock moved on between computing
    # a wait and scheduling it (Python 3.12+ schedules wait_for that way), the loop refused the
    # negative delay, the whole load was cancelled and the tab had no plug-in mounted at all.
    # Whatever fails in holding the starts back, every plug-in still starts.
    plugins = [{"name": n, "type": "python", "path": "x.py"} for n in ("a", "b", "c", "d")]
    (tmp_path / "x.py").write_text("")
    manifest = parse_manifest({"plugins": plugins}, tmp_path)
    loop = new_loop()

    async def boot() -> list[str]:
        runtime = Runtime({"python": _named})
        assert await runtime.start_loading(manifest, pause=0.001, quiet=0.03, patience=10) == []
        return [spec.name for spec in runtime.plugins]

    try:
        assert loop.run_until_complete(boot()) == ["a", "b", "c", "d"]
    finally:
        loop.close()


BLOCKED = """
import time
from pathlib import Path
from valor import vlugin


@vlugin
def on_request(req):
    deadline = time.monotonic() + 10
    while not Path(__file__).with_name("release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"
"""


async def test_a_plugin_removed_while_its_calls_wait_for_a_thread_answers_them(
    tmp_path: Path,
) -> None:
    """A sync plug-in's calls waiting for one of its threads when it is removed (say through
    the registry, by another worker's change) still get their answers: closing its threads
    lets the queued calls run instead of cancelling them, which raised CancelledError out of
    ``handle`` (a dropped request on the server)."""
    path = write(tmp_path, "blocked", BLOCKED)
    plugin = {"name": "blocked", "type": "python", "path": path, "limits": {"threads": 1}}
    runtime = await runtime_with(tmp_path, [plugin])
    threads = runtime.table.mounts["blocked"].plugin.threads
    calls = [asyncio.ensure_future(runtime.handle(request("http://x/blocked"))) for _ in range(2)]
    # Until the second call waits in the queue of the plug-in's one thread (the executor's).
    while threads._executor is None or threads._executor._work_queue.qsize() < 1:
        await asyncio.sleep(0.01)
    await runtime.remove("blocked")
    (tmp_path / "release").touch()
    answers = await asyncio.wait_for(asyncio.gather(*calls), 15)
    assert [(answer["status"], answer["body"]) for answer in answers] == [(200, b"done")] * 2
