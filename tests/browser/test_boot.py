"""Booting on a slow or busy device, in real Chromium: timers due in the past, a plug-in that
fails to start, a bundle served under the wrong path, and the first request the moment
``Valor.start()`` resolves."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Error

from tests.browser.conftest import (
    BLANK_PAGE,
    START,
    Site,
    fetch,
    hold_boot,
    served,
    site_for,
    start_page,
)
from valor import protocol
from valor.build import serve

pytestmark = pytest.mark.browser

# Each of asyncio's ways to wait, on a clock 20 ms further on at every reading (a busy device):
# a 30 ms limit is due before asyncio schedules it, so the delay comes out negative. Pyodide's
# loop refused that (ValueError), this plug-in failed to load and its prefix answered 404.
LATE_TIMERS = """import asyncio
import time

from valor import vlugin


async def on_create(ctx):
    loop = asyncio.get_running_loop()
    readings = 0

    def busy_clock():
        nonlocal readings
        readings += 1
        return time.monotonic() + 0.02 * readings

    loop.time = busy_clock
    try:
        try:
            await asyncio.wait_for(asyncio.sleep(60), 0.03)
            ctx.state.wait_for = "finished"
        except TimeoutError:
            ctx.state.wait_for = "timed out"
        try:
            async with asyncio.timeout(0.03):
                await asyncio.sleep(60)
            ctx.state.timeout = "finished"
        except TimeoutError:
            ctx.state.timeout = "timed out"
        ran = loop.create_future()
        loop.call_at(loop.time() - 1, ran.set_result, "ran")
        ctx.state.call_at = await ran
    finally:
        del loop.time


@vlugin
def report(ctx, req):
    return {"wait_for": ctx.state.wait_for, "timeout": ctx.state.timeout,
            "call_at": ctx.state.call_at}
"""

BROKEN = """from valor import vlugin


def on_create(ctx):
    raise RuntimeError("the database is not there")


@vlugin
def answer(ctx, req):
    return "never"
"""

HELLO = """from valor import vlugin


@vlugin
def hello(req):
    return "hello"
"""

POST_AT_ONCE = """async () => {
  // The page's first request, the moment start() resolves.
  await Valor.start();
  const answer = await fetch("notes", {method: "POST", body: JSON.stringify({text: "first"})});
  return {status: answer.status, body: await answer.text()};
}"""


@pytest.fixture(scope="module")
def busy_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    folder = tmp_path_factory.mktemp("busy")
    files = {"late_timers.py": LATE_TIMERS, "broken.py": BROKEN, "hello.py": HELLO}
    for name, text in files.items():
        (folder / name).write_text(text)
    plugins = [
        {"name": Path(name).stem.replace("_", "-"), "type": "python", "path": name}
        for name in files
    ]
    (folder / "plugins.json").write_text(json.dumps({"plugins": plugins}))
    yield from site_for(tmp_path_factory, "/", folder / "plugins.json")


def test_plugins_load_and_answer_when_timers_are_due_before_they_are_scheduled(
    browser: Browser, busy_site: Site
) -> None:
    context = browser.new_context()
    try:
        page = start_page(context, busy_site.url)
        state = page.evaluate("Valor.loaded()")
        assert sorted(p["name"] for p in state["plugins"]) == ["hello", "late-timers"], state
        report = fetch(page, busy_site.url + "late-timers")
        assert report.status == 200, report
        assert report.json() == {"wait_for": "timed out", "timeout": "timed out", "call_at": "ran"}
        assert fetch(page, busy_site.url + "hello").body == b"hello"
    finally:
        context.close()


def test_a_plugin_that_fails_to_start_is_named_everywhere_a_user_looks(
    browser: Browser, busy_site: Site
) -> None:
    context = browser.new_context()
    console: list[str] = []
    try:
        page = context.new_page()
        page.on("console", lambda message: console.append(message.text))
        page.goto(busy_site.url + "blank.html")
        page.evaluate(START, {})
        # Valor.detail, once loaded.
        failures = page.evaluate("Valor.loaded().then((state) => state.failures)")
        assert len(failures) == 1 and "plug-in 'broken' failed to load" in failures[0]
        assert "the database is not there" in failures[0]
        # Its prefix: the runtime's JSON 503 naming the failure, not a 404.
        answer = fetch(page, busy_site.url + "broken/anything")
        assert answer.status == 503, answer
        assert answer.headers["content-type"] == "application/json"
        assert answer.headers["x-valor-plugin"] == "broken"
        assert "the database is not there" in answer.json()["detail"]
        # /_health lists it.
        health = fetch(page, busy_site.url + "_health").json()
        assert health["plugins"] == 2
        assert [entry["name"] for entry in health["failed"]] == ["broken"]
        # The worker's console: Chromium reports a dedicated worker's console to its page.
        assert any("plug-in 'broken' failed to load" in line for line in console), console
    finally:
        context.close()


@pytest.fixture(scope="module")
def misplaced(site: Site, sub_site: Site) -> Iterator[dict[str, str]]:
    """The root bundle served under /elsewhere/, and the sub-path bundle served at the root."""
    for folder in (site.folder, sub_site.folder):
        (folder / "blank.html").write_text(BLANK_PAGE)
    with served(serve(site.folder, "/elsewhere/")) as under, served(serve(sub_site.folder)) as root:
        yield {"/": under.url, "/sub/path/": root.url}


@pytest.mark.parametrize(("built_for", "served_from"), [("/", "/elsewhere/"), ("/sub/path/", "/")])
def test_a_bundle_served_under_another_path_says_to_rebuild_with_base(
    browser: Browser, misplaced: dict[str, str], built_for: str, served_from: str
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(misplaced[built_for] + "blank.html")
        with pytest.raises(Error) as failed:
            page.evaluate(START, {})
        expected = f"built for {built_for} but served from {served_from}"
        assert expected in str(failed.value) and f"--base {served_from}" in str(failed.value)
        # Every promise settles, with the same reason.
        loaded = page.evaluate("Valor.loaded().then(() => 'resolved', (e) => e.message)")
        assert expected in loaded
        assert page.evaluate("Valor.status") == "error"
    finally:
        context.close()


@pytest.fixture(scope="module")
def other_protocol(
    site: Site, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Copies of the root bundle whose service worker, or runtime worker, speaks the next
    version of the message protocol: a page of one build beside a worker of another."""
    constants = protocol.browser_constants()
    ours = json.dumps(constants)
    theirs = json.dumps({**constants, "version": protocol.VERSION + 1})
    with ExitStack() as stack:
        urls = {}
        for name in ("valor-sw.js", "valor-worker.js"):
            folder = tmp_path_factory.mktemp("other-protocol") / "dist"
            shutil.copytree(site.folder, folder)
            script = folder / name
            assert ours in script.read_text()
            script.write_text(script.read_text().replace(ours, theirs))
            urls[name] = stack.enter_context(served(serve(folder))).url
        yield urls


def test_a_service_worker_of_another_protocol_version_is_refused_with_why(
    browser: Browser, other_protocol: dict[str, str]
) -> None:
    ours, theirs = protocol.VERSION, protocol.VERSION + 1
    context = browser.new_context()
    try:
        page = context.new_page()
        url = other_protocol["valor-sw.js"]
        page.goto(url + "blank.html")
        with pytest.raises(Error) as failed:
            page.evaluate(START, {})
        expected = f"the service worker speaks Valor message protocol {theirs} and this page {ours}"
        assert expected in str(failed.value)
        # Requests of the refused page get the service worker's side of it.
        answer = fetch(page, url + "hello")
        assert answer.status == 503 and answer.reason == "Service Unavailable"
        detail = json.loads(answer.body)["detail"]
        assert f"this page speaks Valor message protocol {ours} and its service worker" in detail
        assert f"and its service worker {theirs}: they come from different builds" in detail
    finally:
        context.close()


def test_a_runtime_worker_of_another_protocol_version_fails_the_start_with_why(
    browser: Browser, other_protocol: dict[str, str]
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(other_protocol["valor-worker.js"] + "blank.html")
        with pytest.raises(Error) as failed:
            page.evaluate(START, {})
        ours, theirs = protocol.VERSION, protocol.VERSION + 1
        expected = f"the runtime worker speaks Valor message protocol {theirs} and this page {ours}"
        assert expected in str(failed.value)
        assert page.evaluate("Valor.status") == "error"
    finally:
        context.close()


def test_a_boot_that_never_ends_fails_start_and_loaded_within_the_bound(
    browser: Browser, site: Site
) -> None:
    context = browser.new_context()
    hold_boot(context)  # the runtime worker never gets its "boot" message
    try:
        page = context.new_page()
        page.goto(site.url + "blank.html")
        with pytest.raises(Error, match="did not boot within 3 s"):
            page.evaluate(START, {"bootTimeout": 3000})
        loaded = page.evaluate("Valor.loaded().then(() => 'resolved', (e) => e.message)")
        assert "did not boot within 3 s" in loaded
    finally:
        context.close()


PROFILES = 20


@pytest.mark.timeout(900)
def test_the_first_request_after_start_reaches_its_plugin_in_new_profiles(
    browser: Browser, site: Site
) -> None:
    # A fresh profile each time (no service worker, no cache): the first POST the moment
    # start() resolves is answered by the notes plug-in, never a 404.
    answers = []
    for _ in range(PROFILES):
        context = browser.new_context()
        try:
            page = context.new_page()
            page.goto(site.url + "blank.html")
            answers.append(page.evaluate(POST_AT_ONCE))
        finally:
            context.close()
    assert [answer["status"] for answer in answers] == [201] * PROFILES, answers
