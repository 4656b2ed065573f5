"""``valor build --site DIR`` (or the manifest's ``"site"``): the user's own pages in the
bundle, precached with it, so the site starts and answers offline, under a sub-path too."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect

from tests.servers import ROOT
from valor.build import BuildError, build, main, serve
from valor.testing.front_end import READY  # start() resolved too: requests intercepted

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
TODO = ROOT / "plugins" / "todo"


def test_the_manifests_site_is_the_start_page(tmp_path: Path) -> None:
    build(TODO / "plugins.json", tmp_path / "dist", base="/sub/path/", quiet=True)
    assets = json.loads((tmp_path / "dist" / "valor-bundle.json").read_text())["assets"]
    assert {"index.html", "app.js", "style.css", "valor.js"} <= set(assets)
    assert (tmp_path / "dist" / "index.html").read_bytes() == (
        TODO / "site/index.html"
    ).read_bytes()


def test_site_option_and_include_together(tmp_path: Path) -> None:
    site = tmp_path / "mine"
    (site / "img").mkdir(parents=True)
    (site / "index.html").write_text("<title>mine</title>")
    (site / "img" / "logo.svg").write_text("<svg/>")
    extra = tmp_path / "robots.txt"
    extra.write_text("User-agent: *")
    status = main(
        [str(TODO / "plugins.json"), "--out", str(tmp_path / "dist"), "--site", str(site),
         "--include", str(extra), "--quiet"]
    )  # fmt: skip
    assert status == 0
    assets = json.loads((tmp_path / "dist" / "valor-bundle.json").read_text())["assets"]
    assert {"index.html", "img/logo.svg", "robots.txt"} <= set(assets)
    assert "app.js" not in assets  # --site replaces the manifest's site
    assert (tmp_path / "dist" / "index.html").read_text() == "<title>mine</title>"


def test_a_missing_site_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"--site .*nowhere.*: no such folder"):
        build(TODO / "plugins.json", tmp_path / "dist", quiet=True, site=tmp_path / "nowhere")
    manifest = tmp_path / "plugins.json"
    shutil.copytree(TODO / "api", tmp_path / "api")
    data = json.loads((TODO / "plugins.json").read_text()) | {"site": "gone"}
    manifest.write_text(json.dumps(data))
    with pytest.raises(BuildError, match=r"the manifest.s \"site\" .*gone.*: no such folder"):
        build(manifest, tmp_path / "dist", quiet=True)


def test_the_site_works_offline_under_a_sub_path(context: BrowserContext, tmp_path: Path) -> None:
    build(TODO / "plugins.json", tmp_path / "dist", base="/sub/path/", quiet=True)
    server = serve(tmp_path / "dist", "/sub/path/")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page = context.new_page()
    try:
        page.goto(server.url)
        page.wait_for_function(READY, timeout=120_000)
        page.get_by_label("New to-do").fill("Works offline")
        page.get_by_role("button", name="Add").click()
        expect(page.get_by_text("1 left")).to_be_visible()
    finally:
        server.shutdown()
        server.server_close()
    page.reload()  # the static host is gone: the page, its script and style come from the cache
    page.wait_for_function(READY, timeout=120_000)
    expect(page.get_by_role("checkbox", name="Works offline")).to_be_visible()
    page.get_by_label("New to-do").fill("Still answering")
    page.get_by_role("button", name="Add").click()
    expect(page.get_by_text("2 left")).to_be_visible()
    assert page.evaluate("() => getComputedStyle(document.body).maxWidth") == "512px"
