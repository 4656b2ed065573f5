"""What each ``valor_page`` test starts with when the tests share a context and its runtime
(reset between tests, not booted again): a plug-in's state, its own modules and the store are
new (kept only when a test asks), and the site's cookies and local storage are empty. On a
site of its own, in real Chromium."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from valor.testing import front_end
from valor.testing.front_end import FrontEndError, ValorAPI

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

COUNTER = """
import tally  # a helper module beside the plug-in, with state of its own
from valor import vlugin


def on_create(ctx):
    ctx.state.calls = 0


@vlugin
async def counter(ctx, req):
    ctx.state.calls += 1
    tally.SEEN.append(req.path)
    stored = await ctx.store.increment("calls")
    return {"calls": ctx.state.calls, "tally": len(tally.SEEN), "stored": stored}
"""
PAGE = """<!doctype html><meta charset="utf-8"><title>Counter</title>
<script type="module">
import { Valor } from "./valor.js";
await Valor.start();
</script>"""
COUNT = "async () => (await fetch('api/counter')).json()"
LEFT = "() => [document.cookie, localStorage.getItem('left')]"


@pytest.fixture(scope="module", autouse=True)
def _wedged_runtimes_found_sooner() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(front_end, "RESET_MS", 5000)
        yield


@pytest.fixture(scope="module")
def valor_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("counter-site")
    (folder / "site").mkdir()
    (folder / "site" / "index.html").write_text(PAGE)
    (folder / "counter.py").write_text(textwrap.dedent(COUNTER))
    (folder / "tally.py").write_text("SEEN = []\n")
    shutil.copy(PLUGINS / "build" / "hello.wasm", folder / "hello.wasm")  # not mounted
    plugin = {"name": "counter", "type": "python", "path": "counter.py", "prefix": "/api/counter"}
    manifest = folder / "plugins.json"
    manifest.write_text(json.dumps({"site": "site", "plugins": [plugin]}))
    return manifest


def test_counts_and_leaves_a_cookie_and_local_storage(valor_page: Page) -> None:
    assert valor_page.evaluate(COUNT) == {"calls": 1, "tally": 1, "stored": 1}
    assert valor_page.evaluate(COUNT) == {"calls": 2, "tally": 2, "stored": 2}
    valor_page.evaluate("() => { document.cookie = 'left=1; max-age=3600'; }")
    valor_page.evaluate("() => localStorage.setItem('left', '1')")
    assert valor_page.evaluate(LEFT) == ["left=1", "1"]


def test_the_next_test_starts_afresh(valor_page: Page) -> None:
    # new ctx.state, the helper module imported again, an empty store, no cookie or local
    # storage
    assert valor_page.evaluate(COUNT) == {"calls": 1, "tally": 1, "stored": 1}
    assert valor_page.evaluate(LEFT) == ["", None]


@pytest.mark.valor_keep_store
def test_a_test_that_keeps_the_store_still_gets_fresh_plugins(valor_page: Page) -> None:
    assert valor_page.evaluate(COUNT) == {"calls": 1, "tally": 1, "stored": 2}


def test_a_second_page_of_the_test_shares_its_runtime(valor_page: Page) -> None:
    assert valor_page.evaluate(COUNT)["calls"] == 1
    other = valor_page.context.new_page()
    try:
        other.goto(valor_page.url)
        other.wait_for_function("() => Valor.status === 'ready' && !Valor.detail.loading")
        assert other.evaluate(COUNT)["calls"] == 2
    finally:
        other.close()


def test_a_plugin_in_a_worker_of_its_own_cannot_join_the_shared_runtime(
    valor_page: Page, valor_api: ValorAPI, valor_manifest: Path
) -> None:
    # a shared worker cannot start workers: the error says what to do instead
    with pytest.raises(FrontEndError, match="valor_fresh_context = true"):
        valor_api.use("wasm", valor_manifest.parent / "hello.wasm", prefix="/api/wasm")
    assert valor_page.evaluate(COUNT)["calls"] == 1  # the runtime goes on


def test_leaves_a_plugin_blocking_the_runtime(valor_page: Page, valor_api: ValorAPI) -> None:
    def spin(req):
        while True:
            pass

    valor_api.use("spin", spin, prefix="/api/spin")
    valor_page.evaluate("() => { fetch('api/spin'); }")  # never answered


def test_the_next_test_gets_a_new_runtime(
    recwarn: pytest.WarningsRecorder, valor_page: Page
) -> None:
    # recwarn first: it records what valor_page's set-up warned
    said = [str(warning.message) for warning in recwarn]
    assert any("booting a new runtime, as the last one did not close" in s for s in said), said
    assert valor_page.evaluate(COUNT) == {"calls": 1, "tally": 1, "stored": 1}
