"""The front-end fixtures (valor.testing.front_end): a page of the user's site with Valor
ready, overrides through the runtime's registry, recorded and unhandled requests, a fresh store
per test. On the to-do example, in real Chromium, served by a real static server."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.servers import ROOT
from valor.testing.front_end import FrontEndError, ValorAPI

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
TODO_MANIFEST = ROOT / "plugins" / "todo" / "plugins.json"
FETCH = "async (path) => { const r = await fetch(path); return [r.status, await r.text()]; }"


@pytest.fixture(scope="module")
def valor_manifest() -> Path:
    return TODO_MANIFEST


def test_the_page_is_the_sites_start_page_with_valor_ready(valor_page: Page) -> None:
    assert valor_page.url.endswith("/")
    expect(valor_page).to_have_title("To-do")
    state = valor_page.evaluate("() => ({status: Valor.status, loading: Valor.detail.loading})")
    assert state == {"status": "ready", "loading": False}


def test_records_what_the_page_asked(valor_page: Page, valor_api: ValorAPI) -> None:
    status, _ = valor_page.evaluate(FETCH, "api/todos/12")
    assert status == 404
    last = valor_api.requests[-1]
    assert (last.method, last.path, last.status, last.plugin) == (
        "GET",
        "api/todos/12",
        404,
        "todos",
    )
    assert len(last.correlation_id or "") == 32
    assert valor_api.unhandled == []  # the plug-in's own 404 is an answer


@pytest.mark.valor_unhandled_requests("bypass")
def test_notes_requests_no_plugin_handles(valor_page: Page, valor_api: ValorAPI) -> None:
    status, _ = valor_page.evaluate(FETCH, "api/users")
    assert status == 404
    assert [(r.method, r.path, r.status) for r in valor_api.unhandled] == [
        ("GET", "api/users", 404)
    ]
    message = valor_api.unhandled_message()
    assert "1 request(s) that no plug-in handled" in message
    assert f"GET {valor_api.url}api/users -> 404" in message


def test_mounts_an_inline_handler_at_a_new_prefix(valor_page: Page, valor_api: ValorAPI) -> None:
    def on_request(ctx, req):
        ctx.state.calls = getattr(ctx.state, "calls", 0) + 1
        return {"path": req.path, "calls": ctx.state.calls}

    added = valor_api.use("stats", on_request, prefix="/api/stats")
    assert added["prefix"] == "/api/stats"
    assert valor_page.evaluate(FETCH, "api/stats/x") == [200, '{"path": "/x", "calls": 1}']
    assert valor_page.evaluate(FETCH, "api/stats/y") == [200, '{"path": "/y", "calls": 2}']
    assert valor_api.requests[-1].plugin == "stats"


def test_the_new_prefix_is_gone_in_the_next_test(valor_page: Page, valor_api: ValorAPI) -> None:
    names = valor_page.evaluate("async () => (await (await fetch('_plugins')).json()).plugins")
    assert [plugin["name"] for plugin in names] == ["todos"]


def test_replaces_a_plugin_with_a_file(valor_page: Page, valor_api: ValorAPI, tmp_path) -> None:
    module = tmp_path / "slow_todos.py"
    module.write_text(
        textwrap.dedent(
            """
            from valor import vlugin

            def on_create(ctx):
                ctx.state.greeting = "from a file"

            @vlugin
            async def todos(ctx, req):
                return {"todos": [], "note": ctx.state.greeting}
            """
        )
    )
    valor_api.use("todos", module)
    status, body = valor_page.evaluate(FETCH, "api/todos")
    assert (status, body) == (200, '{"todos": [], "note": "from a file"}')


def test_an_override_that_cannot_load_says_why(valor_api: ValorAPI, tmp_path) -> None:
    with pytest.raises(FrontEndError, match="with def, not lambda"):
        valor_api.use("todos", lambda req: "no")
    broken = tmp_path / "broken.py"
    broken.write_text("def helper(req):\n    return 'no handler here'\n")
    with pytest.raises(FrontEndError, match="could not mount the override 'todos'"):
        valor_api.use("todos", broken)
    # the plug-in it was to replace is still there
    assert valor_api._call("GET", "_plugins/todos")["status"] == 200
    script = tmp_path / "todos.js"
    script.write_text("")
    with pytest.raises(FrontEndError, match="outside the manifest's folder"):
        valor_api.use("todos", script)


def test_takes_a_plugin_out(valor_page: Page, valor_api: ValorAPI) -> None:
    valor_api.remove("todos")
    expect(valor_page.get_by_text("Nothing to do.")).to_be_visible()
    with pytest.raises(FrontEndError, match="could not take out plug-in 'nope'"):
        valor_api.remove("nope")


def test_adds_a_todo_to_the_store(valor_page: Page) -> None:
    post = "async (body) => (await fetch('api/todos', {method: 'POST', body})).status"
    assert valor_page.evaluate(post, '{"title": "kept"}') == 201


def test_with_a_page_of_its_own_between_the_two(page: Page, valor_front_end) -> None:
    # pytest-playwright's own page: the store the next test with valor_page keeps stays
    assert page.goto(valor_front_end.url + "style.css").ok


@pytest.mark.valor_keep_store
def test_a_test_can_keep_the_store(valor_page: Page) -> None:
    assert "kept" in valor_page.evaluate(FETCH, "api/todos")[1]


def test_plugin_state_is_fresh_but_not_between_requests(valor_page: Page) -> None:
    # the store is empty again after a test that kept it
    assert valor_page.evaluate(FETCH, "api/todos") == [200, '{"todos": []}']


INNER_CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def browser_type_launch_args():
    return {"executable_path": "/usr/bin/chromium", "headless": True, "args": %r}
"""

INNER_TESTS = """
import pytest

def test_asks_for_a_path_nothing_handles(valor_page):
    valor_page.evaluate("() => fetch('api/missing')")

@pytest.mark.valor_unhandled_requests("warn")
def test_only_warns(valor_page):
    valor_page.evaluate("() => fetch('api/missing-too')")

def test_asks_for_a_todo(valor_page, valor_api):
    valor_page.get_by_label("New to-do").fill("Buy milk")
    valor_page.get_by_role("button", name="Add").click()
    valor_page.get_by_text("1 left").wait_for()
    assert valor_api.requests[-1].plugin == "todos"
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("fresh", ["false", "true"], ids=["shared-context", "fresh-context"])
def test_an_unhandled_request_fails_the_test_by_default(tmp_path: Path, fresh: str) -> None:
    """A project of its own, as a user has one: the fixtures come from the installed plug-in,
    the manifest from the ini file; the test whose page asked a path nothing handles fails.
    Also with a context per test (pytest-playwright's own ``context``)."""
    from valor.testing.hosts import CHROMIUM_ARGS

    (tmp_path / "conftest.py").write_text(INNER_CONFTEST % (CHROMIUM_ARGS,))
    (tmp_path / "test_page.py").write_text(INNER_TESTS)
    (tmp_path / "pytest.ini").write_text(f"[pytest]\nvalor_manifest = {TODO_MANIFEST}\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime_py"), str(ROOT)])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "default",
         "-o", f"valor_fresh_context={fresh}",
         f"--basetemp={tmp_path / 'tmp'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    # the failing test's own call passed: the error is its teardown's
    assert "3 passed, 1 warning, 1 error" in output, output
    assert "ERROR at teardown of test_asks_for_a_path_nothing_handles" in output, output
    assert "the page made 1 request(s) that no plug-in handled" in output, output
    assert "api/missing -> 404" in output, output
    assert "api/missing-too -> 404" in output, output  # the warning
