"""docs/testing.md's recipe for Playwright for Node: its config and spec files, as the docs
show them, run by ``@playwright/test`` against ``valor build --serve`` started by its
``webServer`` setting, in real Chromium."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT
from tests.test_docs import blocks
from valor.processes import free_port
from valor.testing.hosts import find_chromium

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]
CLI = ROOT / "node_modules" / "@playwright" / "test" / "cli.js"


def test_the_documented_recipe_passes(tmp_path: Path) -> None:
    if not CLI.exists():
        pytest.skip("@playwright/test is not installed: run npm ci (it is in package.json)")
    files = {b.file: b.text for b in blocks(ROOT / "docs" / "testing.md") if b.file}
    recipe = {name: text for name, text in files.items() if name.endswith(".mjs")}
    assert set(recipe) == {"playwright.config.mjs", "e2e/todo.spec.mjs"}
    port = str(free_port())
    for name, text in recipe.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text.replace("8090", port))
    shutil.copytree(ROOT / "plugins" / "todo", tmp_path / "plugins" / "todo")
    (tmp_path / "node_modules").symlink_to((ROOT / "node_modules").resolve())
    # `valor` as the docs call it, from this checkout whatever is installed
    shim = tmp_path / "bin" / "valor"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m valor.cli "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{shim.parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime_py"), os.environ.get("PYTHONPATH", "")]),
        "CHROMIUM_PATH": find_chromium() or "",
        "CI": "1",
        "NO_COLOR": "1",
    }
    command = ["node", str(CLI), "test", "--reporter=line"]
    done = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=540
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "2 passed" in output, output
