"""The example front end (plugins/todo): a to-do page of plain HTML and JavaScript whose
``fetch("api/todos")`` calls the ``todos`` plug-in answers in the tab. Tested the way a
front-end developer tests a page: clicks, text, an error banner through an override."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.servers import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def valor_manifest() -> Path:
    return ROOT / "plugins" / "todo" / "plugins.json"


def titles(page: Page):
    return page.get_by_role("listitem").locator("label")


def add(page: Page, title: str) -> None:
    page.get_by_label("New to-do").fill(title)
    page.get_by_role("button", name="Add").click()


def test_starts_empty(valor_page: Page) -> None:
    expect(valor_page.get_by_text("Nothing to do.")).to_be_visible()
    expect(valor_page.get_by_role("listitem")).to_have_count(0)


def test_adds_and_completes_todos(valor_page: Page, valor_api) -> None:
    add(valor_page, "Buy milk")
    add(valor_page, "Walk the dog")
    expect(titles(valor_page)).to_have_text(["Buy milk", "Walk the dog"])
    expect(valor_page.get_by_text("2 left")).to_be_visible()

    valor_page.get_by_role("checkbox", name="Buy milk").check()
    expect(valor_page.get_by_text("1 left")).to_be_visible()
    added = [r for r in valor_api.requests if r.method == "POST"]
    assert [(r.path, r.status, r.plugin) for r in added] == [("api/todos", 201, "todos")] * 2
    assert all(r.correlation_id for r in valor_api.requests)


def test_todos_outlast_a_reload(valor_page: Page) -> None:
    add(valor_page, "Water the plants")
    expect(valor_page.get_by_role("listitem")).to_have_count(1)
    valor_page.reload()
    expect(valor_page.get_by_text("Water the plants")).to_be_visible()


def test_each_test_starts_with_an_empty_store(valor_page: Page) -> None:
    # The tests before this one added to-dos: none of them is left.
    expect(valor_page.get_by_text("Nothing to do.")).to_be_visible()


def test_deletes_a_todo(valor_page: Page) -> None:
    add(valor_page, "Call Ann")
    valor_page.get_by_role("button", name="Delete Call Ann").click()
    expect(valor_page.get_by_text("Nothing to do.")).to_be_visible()


def test_shows_an_error_banner_when_the_api_fails(valor_page: Page, valor_api) -> None:
    def todos(req):
        from valor import HTTPError

        raise HTTPError(503, "the to-do service is down for maintenance")

    valor_api.use("todos", todos)
    add(valor_page, "Buy milk")
    banner = valor_page.get_by_role("alert")
    expect(banner).to_have_text(
        "Something went wrong (503: the to-do service is down for maintenance)"
    )
    assert valor_api.requests[-1].plugin == "todos"
    assert valor_api.requests[-1].status == 503


def test_shows_the_list_an_override_gives_on_load(valor_page: Page, valor_api) -> None:
    def todos(req):
        return {"todos": [{"id": 7, "title": "From the override", "done": True}]}

    valor_api.use("todos", todos)
    valor_page.reload()  # the page's first request, after the reload, sees the override
    expect(titles(valor_page)).to_have_text(["From the override"])
    expect(valor_page.get_by_text("0 left")).to_be_visible()


def test_the_override_is_gone_in_the_next_test(valor_page: Page) -> None:
    add(valor_page, "Real again")
    expect(titles(valor_page)).to_have_text(["Real again"])
