"""The plug-ins' store in the browser: the site's IndexedDB database, reached from each tab's
runtime worker, shared by every tab of the site and kept across reloads and offline visits."""

from __future__ import annotations

import json
import shutil
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.browser.conftest import BLANK_PAGE, Site, fetch, served, start_page
from tests.servers import MANIFEST, ROOT
from tests.test_store import CASES
from valor.build import build, serve

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

HERE = Path(__file__).parent
# The real pytest, from this machine's installation, for the table's ``pytest.raises``: copied
# beside the plug-in, whose folder is on the runtime's import path.
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
    site_packages = Path(sysconfig.get_paths()["purelib"])
    for name in PYTEST_MODULES:
        if (site_packages / name).is_dir():
            skip = shutil.ignore_patterns("__pycache__")
            shutil.copytree(site_packages / name, folder / name, ignore=skip)
        else:
            shutil.copy(site_packages / f"{name}.py", folder / f"{name}.py")
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


@pytest.fixture(scope="module")
def cases_page(browser: Browser, store_site: Site):
    context = browser.new_context()
    console: list[str] = []
    context.on("console", lambda message: console.append(message.text))
    page = start_page(context, store_site.url)
    assert page.evaluate("Valor.loaded()")["failures"] == []
    page.console = console  # what the runtime logged: its tracebacks, for failures
    yield page
    context.close()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__.removeprefix("case_"))
def test_the_store_table_passes_on_indexeddb_in_the_runtime_worker(
    cases_page, store_site: Site, case
) -> None:
    name = case.__name__.removeprefix("case_")
    answer = fetch(cases_page, f"{store_site.url}store-cases/{name}")
    assert answer.status == 200, "\n".join([answer.body.decode(), *cases_page.console[-5:]])
    result = answer.json()
    assert result["ok"], result["error"]
