"""``valor new``: a plug-in, its manifest entry and a test that passes, or nothing at all."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from valor.scaffold import main

TEMPLATES = ["python", "worker", "js", "wasm", "wasi", "native", "rust"]


def run_pytest(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("kind", TEMPLATES)
def test_each_kind_scaffolds_a_plugin_whose_test_passes(
    project: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weather", "--kind", kind]) == 0
    out = capsys.readouterr().out
    assert "added 'weather' to plugins/plugins.json" in out
    assert "valor call plugins/plugins.json GET /weather" in out
    manifest = json.loads((project / "plugins/plugins.json").read_text())
    entry = manifest["plugins"][0]
    assert entry["name"] == "weather"
    assert (project / "plugins" / entry["path"]).is_file()  # compiled kinds are built at once

    done = run_pytest(project, "tests/test_weather.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout
    for check in (["check"], ["format", "--check"]):  # generated Python is lint-clean
        linted = subprocess.run(
            [sys.executable, "-m", "ruff", *check, "--isolated", "tests", "plugins"],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert linted.returncode == 0, linted.stdout + linted.stderr

    called = subprocess.run(
        [sys.executable, "-m", "valor.cli", "call", "plugins/plugins.json", "GET", "/weather"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert called.returncode == 0, called.stderr
    assert called.stdout.endswith("Hello world, from weather!\n")


BOTH_HOSTS = """
import pytest


@pytest.mark.parametrize("name", {names!r})
def test_each_kind(valor_host, name):
    answer = valor_host.get("/" + name)
    assert answer.status_code == 200, (valor_host.name, answer.text[:300])
    assert answer.text == f"Hello world, from {{name}}!"
"""


def test_every_scaffolded_kind_answers_on_both_hosts(project: Path) -> None:
    """What ``valor new`` writes runs unchanged on the server and in Chromium (native is
    server-only: left out of the bundle, so checked on the server alone)."""
    browser_kinds = [kind for kind in TEMPLATES if kind != "native"]
    for kind in TEMPLATES:
        assert main([f"k-{kind}", "--kind", kind]) == 0
    (project / "tests" / "test_hosts.py").write_text(
        BOTH_HOSTS.format(names=[f"k-{kind}" for kind in browser_kinds])
    )
    done = run_pytest(project, "-rA", "tests/test_hosts.py")
    assert done.returncode == 0, done.stdout + done.stderr
    for kind in browser_kinds:
        for host in ("server", "browser"):
            assert f"test_each_kind[{host}-k-{kind}]" in done.stdout


def test_the_generated_test_can_fail(project: Path) -> None:
    """The scaffolded test checks the plug-in's answer, so breaking the plug-in breaks it."""
    assert main(["weather"]) == 0
    source = project / "plugins" / "weather.py"
    source.write_text(source.read_text().replace("Hello", "Bye"))
    done = run_pytest(project, "tests")
    assert done.returncode == 1
    assert "2 failed" in done.stdout


def test_a_compiled_plugin_is_rebuilt_by_its_test(project: Path) -> None:
    assert main(["calc", "--kind", "wasm"]) == 0
    source = project / "plugins" / "src" / "calc.wasm.c"
    source.write_text(source.read_text().replace("Hello world", "Changed"))
    done = run_pytest(project, "tests")
    assert done.returncode == 1
    assert "'Changed, from calc!'" in done.stdout  # the test saw the rebuilt module


def test_adds_to_an_existing_manifest_and_keeps_its_entries(project: Path) -> None:
    (project / "api").mkdir()
    existing = {"plugins": [{"name": "first", "type": "python", "path": "first.py", "config": {}}]}
    (project / "api" / "first.py").write_text(
        "from valor import vlugin\n@vlugin\ndef on_request(r):\n    return 'first'\n"
    )
    (project / "api" / "app.json").write_text(json.dumps(existing))
    args = ["second", "--manifest", "api/app.json", "--prefix", "/v2/second", "--tests", "t"]
    assert main(args) == 0
    plugins = json.loads((project / "api" / "app.json").read_text())["plugins"]
    assert plugins == [
        existing["plugins"][0],
        {"name": "second", "type": "python", "path": "second.py", "prefix": "/v2/second"},
    ]
    test = (project / "t" / "test_second.py").read_text()
    assert 'MANIFEST = Path(__file__).parent / "../api/app.json"' in test
    done = run_pytest(project, "t")
    assert done.returncode == 0, done.stdout + done.stderr


def test_keeps_the_manifest_layout_and_adds_one_line(project: Path) -> None:
    (project / "plugins").mkdir()
    manifest = project / "plugins" / "plugins.json"
    layout = (
        '{\n  "plugins": [\n'
        '    {"name": "a", "type": "python", "path": "a.py"},\n'
        '    {"name": "b", "type": "python", "path": "b.py", "config": {"x": [1, 2]}}\n'
        "  ]\n}\n"
    )
    manifest.write_text(layout)
    assert main(["weather"]) == 0
    added = '    {"name": "weather", "type": "python", "path": "weather.py"}\n'
    assert manifest.read_text() == layout.replace("}}\n  ]", "}},\n" + added + "  ]")


def test_names_become_identifiers(project: Path) -> None:
    assert main(["my-api.v2"]) == 0
    assert (project / "tests" / "test_my_api_v2.py").is_file()
    assert run_pytest(project, "tests").returncode == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["hello"], "a plug-in named 'hello' is already in plugins/plugins.json"),
        (["hi", "--prefix", "/hello"], "prefix '/hello' is already used by plug-in 'hello'"),
        (["bad name"], "'name' must be a non-empty string"),
        (["x", "--prefix", "/_health"], "reserved for Valor's built-ins"),
        (["taken"], "already exists; not overwriting it"),
        (["t2", "--tests", "tests2"], "already exists; not overwriting it"),
    ],
)
def test_refuses_clashes_and_changes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["hello"]) == 0
    (project / "plugins" / "taken.py").write_text("# someone's file\n")
    (project / "tests2").mkdir()
    (project / "tests2" / "test_t2.py").write_text("# someone's test\n")
    capsys.readouterr()
    before = snapshot(project)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert snapshot(project) == before


def test_an_invalid_manifest_is_refused(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "plugins").mkdir()
    (project / "plugins" / "plugins.json").write_text('{"plugins": [{"name": "x"}]}')
    before = snapshot(project)
    assert main(["weather"]) == 2
    assert "fix the manifest first" in capsys.readouterr().err
    assert snapshot(project) == before


def test_the_cli_dispatches_to_it(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "valor.cli", "new", "hello", "--manifest", "m/plugins.json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert (project / "m" / "hello.py").is_file()


@pytest.mark.timeout(300)
def test_a_rust_crate_names_the_sdk_relative_to_itself(project: Path) -> None:
    from valor.toolchain import RUST_SDK

    assert main(["calc", "--kind", "rust"]) == 0
    crate = project / "plugins" / "src" / "calc"
    found = re.search(r'valor = \{ path = "([^"]+)" \}', (crate / "Cargo.toml").read_text())
    assert found is not None and not Path(found.group(1)).is_absolute(), found
    assert (crate / found.group(1)).resolve() == RUST_SDK.resolve()
