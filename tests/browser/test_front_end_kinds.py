"""``valor_page`` with plug-ins the browser host runs in workers of their own (js, wasm, wasi):
Chromium's shared workers cannot start workers, so such a site's tests each get a context and
a runtime of their own, and every kind answers; in real Chromium."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page

from valor.testing.front_end import FrontEndError, ValorAPI

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
PAGE = """<!doctype html><meta charset="utf-8"><title>Kinds</title>
<script type="module">
import { Valor } from "./valor.js";
await Valor.start();
</script>"""
GET = "async (url) => { const r = await fetch(url); return [r.status, await r.text()]; }"


@pytest.fixture(scope="module")
def valor_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("kinds-site")
    (folder / "site").mkdir()
    (folder / "site" / "index.html").write_text(PAGE)
    (folder / "build").mkdir()
    for name in ("hello.js", "build/hello.wasm", "build/hello.wasi.wasm"):
        shutil.copy(PLUGINS / name, folder / name)
    plugins = [
        {"name": "js", "type": "js", "path": "hello.js", "prefix": "/api/js"},
        {"name": "wasm", "type": "wasm", "path": "build/hello.wasm", "prefix": "/api/wasm"},
        {"name": "wasi", "type": "wasi", "path": "build/hello.wasi.wasm", "prefix": "/api/wasi"},
    ]
    manifest = folder / "plugins.json"
    manifest.write_text(json.dumps({"site": "site", "plugins": plugins}))
    return manifest


def test_every_kind_answers_the_page(valor_page: Page) -> None:
    for url in ("api/js", "api/wasm", "api/wasi"):
        assert valor_page.evaluate(GET, url) == [200, "Hello Plugin!"]


def test_an_override_of_a_kind_in_workers_mounts_too(
    valor_page: Page, valor_api: ValorAPI, valor_manifest: Path
) -> None:
    valor_api.use("wasm", valor_manifest.parent / "hello.js", prefix="/api/wasm")
    assert valor_page.evaluate(GET, "api/wasm") == [200, "Hello Plugin!"]
    with pytest.raises(FrontEndError, match="no such file"):
        valor_api.use("more", valor_manifest.parent / "missing.js")
