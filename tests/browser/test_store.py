"""The plug-ins' store in the browser: the site's IndexedDB database, reached from each tab's
runtime worker, shared by every tab of the site and kept across reloads and offline visits.

The store's table of cases (``tests/test_store.py``) runs on IndexedDB inside the runtime
worker; then, as a visitor sees it: a note posted in one tab is listed in another, after a
reload and offline; two tabs adding notes at once get distinct ids; plug-ins added or removed
in one tab are served so by every tab; the plug-in-level table answers byte for byte as the
server does; a full quota answers 507 and a database out of reach 503, and both recover."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page

from tests.browser.conftest import (
    BLANK_PAGE,
    START,
    Site,
    browser_send,
    fetch,
    served,
    start_page,
)
from tests.parity.store_table import STORE_MANIFEST, compare_store_cases
from tests.servers import MANIFEST, ROOT, http_send, valor_server
from tests.test_store import CASES
from valor.build import build, serve
from valor.store.indexeddb import DATABASE_VERSION

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

HERE = Path(__file__).parent
# The real pytest, from this machine's installation, for the table's ``pytest.raises``: its
# modules copied beside the plug-in, whose folder is on the runtime's import path.
PYTEST_MODULES = ("pytest", "_pytest", "py", "pluggy", "iniconfig", "packaging", "pygments")
STORE_PLUGINS = [
    {"name": "store-cases", "type": "python", "path": "store_cases.py", "timeout": 120},
]


def store_manifest(folder: Path) -> Path:
    """``plugins/`` (notes and the other examples) plus ``store-cases``, which runs the store's
    table in the runtime worker."""
    shutil.copytree(MANIFEST.parent, folder, ignore=shutil.ignore_patterns("src"))
    shutil.copy(HERE / "store" / "store_cases.py", folder / "store_cases.py")
    shutil.copy(ROOT / "tests" / "test_store.py", folder / "store_table.py")
    for module in list(sys.modules.values()):
        # What this process has loaded of them: more than ``import pytest`` needs, and a
        # fraction of the whole (pygments' hundreds of lexers), so the site stays small.
        name = getattr(module, "__name__", "")
        file = getattr(module, "__file__", None)
        top = name.partition(".")[0]
        if top in PYTEST_MODULES and file is not None:
            top_file = Path(sys.modules[top].__file__)
            root = top_file.parent.parent if top_file.name == "__init__.py" else top_file.parent
            target = folder / Path(file).relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, target)
    manifest = folder / "plugins.json"
    plugins = json.loads(manifest.read_text())
    plugins["plugins"] += STORE_PLUGINS
    manifest.write_text(json.dumps(plugins))
    return manifest


@pytest.fixture(scope="module")
def store_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle of ``store_manifest``, built once for this module."""
    folder = tmp_path_factory.mktemp("store-site")
    build(store_manifest(folder / "plugins"), folder / "dist", quiet=True)
    (folder / "dist" / "blank.html").write_text(BLANK_PAGE)
    return folder / "dist"


@pytest.fixture(scope="module")
def store_site(store_dist: Path) -> Iterator[Site]:
    with served(serve(store_dist)) as server:
        yield Site(server.url, "/", store_dist)


@dataclass
class Tab:
    page: Page
    console: list[str]  # what the runtime logged (its tracebacks), shown with a failure


@pytest.fixture(scope="module")
def cases_tab(browser: Browser, store_site: Site) -> Iterator[Tab]:
    context = browser.new_context()
    console: list[str] = []
    context.on("console", lambda message: console.append(message.text))
    page = start_page(context, store_site.url)
    failures = page.evaluate("Valor.loaded()")["failures"]
    assert all("a browser cannot load" in failure for failure in failures), failures  # native
    yield Tab(page, console)
    context.close()


NAMES = [case.__name__.removeprefix("case_") for case in CASES]
# The browser's backend's own: tests/browser/store/store_cases.py.
NAMES += [
    "entries_written_before_clock_versions_are_read_and_outgrown",
    "expired_entries_are_removed",
    "writes_from_two_connections_get_distinct_versions",
    "a_transaction_does_not_outlive_an_await",
    "entries_of_version_1_are_moved_to_their_keys",
    "a_batch_reads_more_than_its_buffer_holds",
]


@pytest.mark.parametrize("name", NAMES)
def test_the_store_table_passes_on_indexeddb_in_the_runtime_worker(
    cases_tab: Tab, store_site: Site, name: str
) -> None:
    answer = fetch(cases_tab.page, f"{store_site.url}store-cases/{name}")
    assert answer.status == 200, "\n".join([answer.body.decode(), *cases_tab.console[-5:]])
    result = answer.json()
    assert result["ok"], result["error"]


def demo_page(context: BrowserContext, site: Site) -> Page:
    page = context.new_page()
    page.goto(site.url)
    page.evaluate(START, {})
    return page


def notes_of(page: Page, site: Site) -> list[dict]:
    answer = fetch(page, site.url + "notes")
    assert answer.status == 200, answer.body
    return answer.json()["notes"]


def add_note(page: Page, site: Site, text: str) -> dict:
    answer = fetch(page, site.url + "notes", "POST", body=json.dumps({"text": text}).encode())
    assert answer.status == 201, answer.body
    return answer.json()


def test_a_note_posted_in_one_tab_is_listed_in_another_after_a_reload_and_offline(
    browser: Browser, store_dist: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "dist"
    shutil.copytree(store_dist, folder)
    context = browser.new_context()
    try:
        with served(serve(folder)) as server:
            site = Site(server.url, "/", folder)
            # The demo page: the build's own page, kept by the service worker for offline use.
            first, second = (demo_page(context, site) for _ in range(2))
            # The seed note is the store's first: added once, by whichever tab came first.
            assert notes_of(first, site) == [{"id": 1, "text": "Try POST /notes"}]
            note = add_note(first, site, "written in the first tab")
            assert note["id"] == 2
            assert note in notes_of(second, site)
            assert fetch(second, f"{site.url}notes/{note['id']}").json() == note
            second.reload()
            second.evaluate(START, {})
            assert notes_of(second, site) == [{"id": 1, "text": "Try POST /notes"}, note]
        # The static host is stopped: the tabs boot from the service worker's cache and the
        # notes are still there, for reading and for writing.
        first.reload()
        first.evaluate(START, {})
        assert notes_of(first, site)[-1] == note
        offline = add_note(first, site, "written offline")
        assert offline["id"] == 3
        assert notes_of(second, site)[-2:] == [note, offline]
    finally:
        context.close()


def test_two_tabs_adding_notes_at_once_get_distinct_ids(browser: Browser, store_site: Site) -> None:
    context = browser.new_context()
    try:
        tabs = [start_page(context, store_site.url) for _ in range(2)]
        script = """async (tab) => Promise.all(Array.from({length: 40}, async (_, i) => {
          const body = JSON.stringify({text: `${tab}-${i}`});
          const r = await fetch("notes", {method: "POST", body});
          return [r.status, (await r.json()).id];
        }))"""
        # Both tabs' requests are in flight together: each tab's runtime adds its notes.
        running = [tab.evaluate_handle(script, f"tab{index}") for index, tab in enumerate(tabs)]
        answers = [answer for handle in running for answer in handle.json_value()]
        assert {status for status, _ in answers} == {201}
        ids = sorted(note_id for _, note_id in answers)
        assert ids == list(range(2, 82))  # 1 is the seed note
        listed = notes_of(tabs[1], store_site)
        assert [note["id"] for note in listed] == list(range(1, 82))
    finally:
        context.close()


def test_health_names_the_tabs_store(cases_tab: Tab, store_site: Site) -> None:
    health = fetch(cases_tab.page, store_site.url + "_health").json()
    assert health["store"] == "indexeddb:valor-store:/"
    own = fetch(cases_tab.page, store_site.url + "store-cases/").json()
    assert own == {"backend": "IndexedDBBackend", "description": "indexeddb:valor-store:/"}


def answer_within(page: Page, url: str, status: int, seconds: float = 10.0) -> float:
    """Ask ``url`` from ``page`` until it answers ``status``; how long that took."""
    started = time.monotonic()
    while True:
        answer = fetch(page, url)
        waited = time.monotonic() - started
        if answer.status == status:
            return waited
        assert waited < seconds, f"{url} still answers {answer.status}: {answer.body!r}"


def test_plugins_added_or_removed_in_one_tab_are_served_so_by_every_tab(
    browser: Browser, store_site: Site
) -> None:
    context = browser.new_context()
    url = store_site.url
    try:
        first, second = (start_page(context, url) for _ in range(2))
        for tab in (first, second):
            tab.evaluate("Valor.loaded()")
        definition = {"name": "hello-again", "type": "python", "path": "hello.py"}
        added = fetch(first, url + "_plugins", "POST", body=json.dumps(definition).encode())
        assert added.status == 201, added.body
        assert fetch(first, url + "hello-again").body == b"Hello Plugin!"
        # The other tab follows within a second: each runtime looks at the registry's changes
        # in the store every 0.5 s (valor.registry). Bounded generously for a busy machine.
        followed = answer_within(second, url + "hello-again", 200)
        assert fetch(second, url + "hello-again").body == b"Hello Plugin!"
        # Removed in the second tab, a manifest's plug-in too: gone in the first.
        for name in ("hello-again", "greeter"):
            assert fetch(second, f"{url}_plugins/{name}", "DELETE").status == 200
            answer_within(first, f"{url}{name}?who=Bob", 404)
        # Kept across a reload, and for a tab that boots later.
        first.reload()
        first.evaluate(START, {})
        third = start_page(context, url)
        for tab in (first, third):
            names = [p["name"] for p in tab.evaluate("Valor.loaded()")["plugins"]]
            assert "notes" in names and "greeter" not in names and "hello-again" not in names
            assert fetch(tab, url + "greeter?who=Bob").status == 404
        # Added back: a manifest's plug-in comes back everywhere.
        again = {"name": "greeter", "type": "python", "path": "greeter.py"}
        assert fetch(third, url + "_plugins", "POST", body=json.dumps(again).encode()).status == 201
        for tab in (first, second):
            answer_within(tab, url + "greeter?who=Bob", 200)
        print(f"the second tab served the added plug-in after {followed * 1000:.0f} ms")
    finally:
        context.close()


def test_the_plugin_level_store_table_answers_the_same_in_both_hosts(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Both stores start empty: the server's a new SQLite file, the browser's a new profile's
    # IndexedDB. Values, cursors and errors must come back byte for byte the same, and versions
    # where the same answers show the same one (the browser's come from its clock).
    folder = tmp_path_factory.mktemp("kv-site") / "dist"
    build(STORE_MANIFEST, folder, quiet=True)
    (folder / "blank.html").write_text(BLANK_PAGE)
    context = browser.new_context()
    try:
        with (
            valor_server(STORE_MANIFEST, log_dir=tmp_path_factory.mktemp("kv")) as server,
            served(serve(folder)) as static,
        ):
            site = Site(static.url, "/", folder)
            page = start_page(context, site.url)
            sends = (http_send(server.url), browser_send(page, site))
            origins = (server.url, site.url.rstrip("/"))
            compare_store_cases(*sends, origins, same_versions=False)
    finally:
        context.close()


def test_a_full_quota_answers_507_naming_the_store_and_recovers(
    browser: Browser, store_site: Site
) -> None:
    url = store_site.url
    origin = url.rstrip("/")
    context = browser.new_context()
    try:
        page = start_page(context, url)
        # The site's quota, lowered to what it uses (the service worker's copy of the bundle,
        # mostly) plus 300 kB.
        cdp = context.new_cdp_session(page)
        usage = cdp.send("Storage.getUsageAndQuota", {"origin": origin})["usage"]
        quota = usage + 300_000
        cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin, "quotaSize": quota})
        add_note(page, store_site, "before the quota ran out")
        for _ in range(20):
            # Random text: Chromium compresses what it keeps in IndexedDB.
            text = base64.b64encode(os.urandom(45_000)).decode()
            full = fetch(page, url + "notes", "POST", body=json.dumps({"text": text}).encode())
            if full.status != 201:
                break
        assert full.status == 507, full.body
        assert full.reason == "Insufficient Storage"
        error = full.json()
        assert error["store"] == "indexeddb:valor-store:/"
        assert "notes" in error["detail"] and "quota" in error["detail"], error
        # Reading still works, and so do the other plug-ins.
        texts = [note["text"] for note in notes_of(page, store_site)]
        assert texts[:2] == ["Try POST /notes", "before the quota ran out"]
        assert fetch(page, url + "hello").status == 200
        # Given room again, the store is back without a reload.
        cdp.send("Storage.overrideQuotaForOrigin", {"origin": origin})
        assert add_note(page, store_site, "after")["text"] == "after"
    finally:
        context.close()


UPGRADE_ELSEWHERE = """async ([name, version]) => {
  // What a newer build's schema would do: open the site's database at a higher version.
  await new Promise((resolve, reject) => {
    const request = indexedDB.open(name, version);
    request.onsuccess = () => { request.result.close(); resolve(); };
    request.onerror = () => reject(request.error);
  });
}"""

DELETE_DATABASE = """async (name) => new Promise((resolve, reject) => {
  const request = indexedDB.deleteDatabase(name);
  request.onsuccess = resolve;
  request.onerror = () => reject(request.error);
})"""


def test_a_store_out_of_reach_answers_503_naming_it_and_recovers(
    browser: Browser, store_site: Site
) -> None:
    context = browser.new_context()
    url = store_site.url
    try:
        page = start_page(context, url)
        add_note(page, store_site, "first")
        # The tab's connection lets go when the database is upgraded elsewhere; its own
        # version is then refused: the store cannot be opened by this build.
        page.evaluate(UPGRADE_ELSEWHERE, ["valor-store:/", DATABASE_VERSION + 1])
        refused = fetch(page, url + "notes")
        assert refused.status == 503, refused.body
        error = refused.json()
        assert error["store"] == "indexeddb:valor-store:/"
        assert "VersionError" in error["detail"] and "notes" in error["detail"], error
        assert fetch(page, url + "hello").status == 200  # the others keep serving
        # Once the database can be opened again, the store is back without a reload.
        page.evaluate(DELETE_DATABASE, "valor-store:/")
        assert add_note(page, store_site, "again")["text"] == "again"
    finally:
        context.close()
