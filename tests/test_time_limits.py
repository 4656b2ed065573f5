"""The suite's own guard: every test has a time limit (pytest-timeout, set in pyproject.toml),
so a test that hangs fails in bounded time, with its name, and the run goes on."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.servers import ROOT

HANGS = """import threading

def test_that_hangs():
    threading.Event().wait()

def test_after_it():
    pass
"""


def test_every_test_has_a_time_limit() -> None:
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    assert 0 < settings["ini_options"]["timeout"] <= 600


def test_a_test_that_hangs_fails_with_its_name_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "test_hang.py").write_text(HANGS)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "timeout=2", "-q"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout
    assert "FAILED test_hang.py::test_that_hangs" in done.stdout
    assert "Timeout" in done.stdout
    assert "1 failed, 1 passed" in done.stdout
