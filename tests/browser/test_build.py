"""``valor build`` without a browser: what the bundle holds, the cache, and clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.browser.wheels import write_wheel
from tests.servers import ASGI_MANIFEST, MANIFEST, ROOT
from valor import build as build_module
from valor import protocol
from valor.build import PYODIDE_FILES, BuildError, build


def manifest(folder: Path, plugins: list[dict], files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    path = folder / "plugins.json"
    path.write_text(json.dumps({"plugins": plugins}))
    return path


HELLO = "from valor import vlugin\n\n@vlugin\ndef on_request(req):\n    return 'hi'\n"


def test_bundle_contents(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    bundle = build(MANIFEST, out, base="/sub/path", quiet=True)
    assert bundle.base == "/sub/path/"
    for name in ("index.html", "valor.js", "valor-sw.js", "valor-worker.js", "demo.js"):
        assert (out / name).is_file(), name
    for name in PYODIDE_FILES:
        assert (out / "pyodide" / name).is_file(), name
    info = json.loads((out / "valor-bundle.json").read_text())
    assert info["version"] == bundle.version and info["base"] == "/sub/path/"
    wheel_name = Path(info["runtime_wheel"]).name
    assert wheel_name.startswith("valor-") and wheel_name.endswith("-py3-none-any.whl")
    assert (out / info["runtime_wheel"]).is_file()
    assert info["requirement_wheels"] == [] and info["requirements_archive"] is None
    with zipfile.ZipFile(out / info["runtime_wheel"]) as wheel:  # the worker copies it out
        assert {entry.compress_type for entry in wheel.infolist()} == {zipfile.ZIP_STORED}
    assert "plugins/plugins.json" in info["files"] and "plugins/hello.py" in info["files"]
    # The runtime worker takes the plug-ins' files from one archive, kept offline instead.
    with zipfile.ZipFile(out / info["files_archive"]) as archive:
        assert archive.namelist() == info["files"]
        assert {entry.compress_type for entry in archive.infolist()} == {zipfile.ZIP_STORED}
        assert archive.read("plugins/hello.py") == (out / "plugins" / "hello.py").read_bytes()
    # The page and the service worker carry the same build stamp.
    for name in ("valor.js", "valor-sw.js"):
        assert f'"version": "{bundle.version}"' in (out / name).read_text(), name
    # The memory snapshot, made for this runtime wheel, and kept offline with the rest.
    assert info["snapshot"]["path"] == "snapshot.bin" and len(info["snapshot"]["key"]) == 16
    assert (out / "snapshot.bin").stat().st_size == info["snapshot"]["bytes"] > 10_000_000
    assert "snapshot.bin" in info["assets"] and "plugins.zip" in info["assets"]
    assert "plugins/build/hello.wasm" in info["assets"]
    # Intercepted from the start: the built-ins and the mounts, under the base.
    assert info["prefixes"][:3] == ["/sub/path/_health", "/sub/path/_plugins", "/sub/path/hello"]
    assert info["fallback"] is None


def test_the_scripts_get_the_message_protocol_and_the_runtimes_http_facts(tmp_path: Path) -> None:
    build(MANIFEST, tmp_path / "d", quiet=True)
    written = f"const PROTOCOL = {json.dumps(protocol.browser_constants())};"
    for name in ("valor.js", "valor-sw.js", "valor-worker.js", "valor-snapshot.js"):
        assert written in (tmp_path / "d" / name).read_text(), name


def test_no_snapshot_leaves_it_out(tmp_path: Path) -> None:
    build(MANIFEST, tmp_path / "d", snapshot=False, quiet=True)
    info = json.loads((tmp_path / "d" / "valor-bundle.json").read_text())
    assert info["snapshot"] is None and not (tmp_path / "d" / "snapshot.bin").exists()
    assert info["snapshot_in_browser"] is False  # left out on purpose: none in the browser either


def script_copy(tmp_path: Path, extra: str) -> Path:
    """The snapshot script with a change, so its snapshot is not in the cache."""
    script = tmp_path / "snapshot.mjs"
    source = (build_module.PACKAGE_DIR / build_module.SNAPSHOT_SCRIPT).read_text()
    script.write_text(source + extra)
    return script


def test_without_node_the_build_warns_and_leaves_the_snapshot_to_the_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(build_module, "SNAPSHOT_SCRIPT", script_copy(tmp_path, "// no node\n"))
    which = build_module.shutil.which
    monkeypatch.setattr(build_module.shutil, "which", lambda n: None if n == "node" else which(n))
    bundle = build(MANIFEST, tmp_path / "d")
    assert bundle.snapshot is None and not (tmp_path / "d" / "snapshot.bin").exists()
    assert bundle.snapshot_in_browser is True
    output = capsys.readouterr().out
    assert "warning: Node.js is not installed: no memory snapshot in the bundle" in output
    assert "each browser makes one after its first boot" in output


def test_a_failing_snapshot_script_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    broken = script_copy(tmp_path, 'throw new Error("cannot snapshot here");\n')
    monkeypatch.setattr(build_module, "SNAPSHOT_SCRIPT", broken)
    bundle = build(MANIFEST, tmp_path / "d")
    assert bundle.snapshot is None and bundle.snapshot_in_browser is True
    output = capsys.readouterr().out
    assert "warning: no memory snapshot in the bundle" in output
    assert "cannot snapshot here" in output


def test_when_the_requirements_break_the_snapshot_it_holds_the_runtime_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    fails = 'if (requirementsDir) throw new Error("cannot import these here");\n'
    monkeypatch.setattr(build_module, "SNAPSHOT_SCRIPT", script_copy(tmp_path, fails))
    bundle = build(ASGI_MANIFEST, tmp_path / "d")
    assert bundle.snapshot is not None and "dynlibs" not in bundle.snapshot
    assert (tmp_path / "d" / "snapshot.bin").exists() and not bundle.snapshot_in_browser
    output = capsys.readouterr().out
    assert "warning: the memory snapshot holds the runtime only" in output
    assert "cannot import these here" in output


def test_fallback_is_stamped_into_the_page_and_the_service_worker(tmp_path: Path) -> None:
    bundle = build(MANIFEST, tmp_path / "d", fallback="http://127.0.0.1:9/api", quiet=True)
    assert bundle.fallback == "http://127.0.0.1:9/api/"
    for name in ("valor.js", "valor-sw.js"):
        assert '"fallback": "http://127.0.0.1:9/api/"' in (tmp_path / "d" / name).read_text()
    with pytest.raises(BuildError, match="--fallback must be an http"):
        build(MANIFEST, tmp_path / "e", fallback="127.0.0.1:9", quiet=True)


def test_rerun_uses_the_cache_and_takes_seconds(tmp_path: Path) -> None:
    build(MANIFEST, tmp_path / "a", quiet=True)
    started = time.perf_counter()
    first = build(MANIFEST, tmp_path / "a", quiet=True)
    assert time.perf_counter() - started < 5
    assert build(MANIFEST, tmp_path / "b", quiet=True).version == first.version


def test_progress_is_printed_step_by_step(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), str(MANIFEST), "--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    steps = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(steps) == 7 and steps[0].startswith("[1/7] Checking the manifest")
    assert all(" done" in line for line in steps)
    assert re.search(r"\[5/7\] Making the memory snapshot with Node .* MB, .* MB gzipped", steps[4])
    assert "Built " in result.stdout


def test_missing_plugin_file_is_a_clear_error(tmp_path: Path) -> None:
    path = manifest(tmp_path / "p", [{"name": "ghost", "type": "python", "path": "ghost.py"}], {})
    result = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), str(path), "--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "plug-in 'ghost': file" in result.stderr and "ghost.py' not found" in result.stderr
    assert not (tmp_path / "d").exists()


def test_bad_base_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="--base must be a URL path"):
        build(MANIFEST, tmp_path / "d", base="sub", quiet=True)


def test_missing_npm_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No pinned copy in the checkout or the cache, and no npm on the PATH.
    monkeypatch.setattr(build_module, "REPO_DIR", tmp_path / "nowhere")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BuildError, match="npm is not installed"):
        build(MANIFEST, tmp_path / "d", cache=tmp_path / "cache", quiet=True)


def test_requirement_without_a_pure_python_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "index"
    tag = "cp314-cp314-manylinux_2_17_x86_64"
    write_wheel(wheels, "valor_native_only", "1.0", tag, {"valor_native_only/__init__.py": ""})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    plugin = {
        "name": "needy",
        "type": "python",
        "path": "h.py",
        "requirements": ["valor_native_only"],
    }
    path = manifest(tmp_path / "p", [plugin], {"h.py": HELLO})
    with pytest.raises(BuildError) as error:
        build(path, tmp_path / "d", quiet=True)
    message = str(error.value)
    assert (
        "plug-in 'needy'" in message and "'valor_native_only' has no pure-Python wheel" in message
    )
    assert "nor a wheel built for Pyodide (pyemscripten_2026_0_wasm32, cp314)" in message


def test_a_requirement_compiled_for_pyodide_is_bundled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Like pydantic-core: no pure wheel, one built for Pyodide's platform (from its lock file).
    wheels = tmp_path / "index"
    files = {"valor_compiled/__init__.py": ""}
    write_wheel(wheels, "valor_compiled", "1.0", "cp314-cp314-manylinux_2_17_x86_64", files)
    write_wheel(wheels, "valor_compiled", "1.0", "cp314-cp314-pyemscripten_2026_0_wasm32", files)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    plugin = {"name": "c", "type": "python", "path": "h.py", "requirements": ["valor_compiled"]}
    path = manifest(tmp_path / "p", [plugin], {"h.py": HELLO})
    build(path, tmp_path / "d", quiet=True)
    info = json.loads((tmp_path / "d" / "valor-bundle.json").read_text())
    wheel = "valor_compiled-1.0-cp314-cp314-pyemscripten_2026_0_wasm32.whl"
    assert info["requirement_wheels"] == [wheel]
    # Shipped once: as the archive below, not also as the wheel (nor precached twice).
    assert not (tmp_path / "d" / "wheels" / wheel).exists()
    assert [a for a in info["assets"] if a.startswith("wheels/")] == [info["runtime_wheel"]]
    assert info["requirements_archive"] in info["assets"]
    # Its files, laid out as installed, in the stored archive the runtime worker writes out.
    with zipfile.ZipFile(tmp_path / "d" / info["requirements_archive"]) as archive:
        assert "valor_compiled/__init__.py" in archive.namelist()
        assert "valor_compiled-1.0.dist-info/METADATA" in archive.namelist()
        # With its modules' bytecode, made by Pyodide's own Python: no compiling at import.
        pyc = "valor_compiled/__pycache__/__init__.cpython-314.pyc"
        assert archive.read(pyc)[4:8] == b"\x01\x00\x00\x00"  # unchecked hash-based
        assert {entry.compress_type for entry in archive.infolist()} == {zipfile.ZIP_STORED}


def test_native_plugins_are_left_out_with_a_warning_and_a_stand_in(tmp_path: Path, capsys) -> None:
    plugins = [
        {"name": "hi", "type": "python", "path": "h.py"},
        {"name": "fast", "type": "native", "path": "libfast.so"},
    ]
    path = manifest(tmp_path / "p", plugins, {"h.py": HELLO, "libfast.so": ""})
    build(path, tmp_path / "d")
    assert "plug-in 'fast' is left out" in capsys.readouterr().out
    # It stays in the browser's manifest, which refuses to load it: its prefix answers why.
    shipped = json.loads((tmp_path / "d" / "plugins" / "plugins.json").read_text())
    assert shipped["plugins"][1] == {
        "name": "fast", "prefix": "/fast", "timeout": 30.0, "type": "native", "path": "libfast.so"
    }  # fmt: skip
    info = json.loads((tmp_path / "d" / "valor-bundle.json").read_text())
    assert "/fast" in info["prefixes"]
    # With a fallback server, its requests go there, through a proxy at the same prefix.
    build(path, tmp_path / "f", fallback="http://127.0.0.1:8000/")
    shipped = json.loads((tmp_path / "f" / "plugins" / "plugins.json").read_text())
    assert shipped["plugins"][1] == {
        "name": "fast", "prefix": "/fast", "timeout": 30.0, "type": "proxy",
        "url": "http://127.0.0.1:8000/fast",
    }  # fmt: skip


def test_the_pyodide_step_says_where_pyodide_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The checkout's pinned copy: an empty --cache stays empty, and the step says so.
    empty = tmp_path / "empty-cache"
    build(MANIFEST, tmp_path / "a", cache=empty)
    pinned = build_module.REPO_DIR / "node_modules" / "pyodide"
    line = next(x for x in capsys.readouterr().out.splitlines() if "Pyodide" in x)
    assert line.startswith("[2/7] Getting Pyodide ") and f"done (from {pinned}) " in line
    assert "cached" not in line and not list(empty.glob("pyodide-*"))
    # No copy in the checkout: one installed in the cache earlier.
    cached = tmp_path / "cache" / f"pyodide-{build_module.PYODIDE_VERSION}" / "node_modules"
    cached.mkdir(parents=True)
    (cached / "pyodide").symlink_to(pinned.resolve())
    monkeypatch.setattr(build_module, "REPO_DIR", tmp_path / "nowhere")
    build(MANIFEST, tmp_path / "b", cache=tmp_path / "cache")
    line = next(x for x in capsys.readouterr().out.splitlines() if "Pyodide" in x)
    assert f"done (cached in {cached / 'pyodide'}) " in line


@pytest.mark.timeout(120)
def test_a_plugin_that_does_not_compile_fails_the_build(tmp_path: Path) -> None:
    files = {"app/__init__.py": "", "app/models.py": "\n\nBOOKS = [\n", "app/main.py": HELLO}
    path = manifest(tmp_path / "p", [{"name": "lib", "type": "python", "path": "app/main.py"}], {})
    for name, text in files.items():
        (tmp_path / "p" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "p" / name).write_text(text)
    result = subprocess.run(
        [sys.executable, str(ROOT / "build.py"), str(path), "--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result
    assert "plug-in 'lib': syntax error in" in result.stderr
    assert "app/models.py line 3" in result.stderr, result.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.timeout(300)
def test_an_import_no_requirement_covers_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    wheels = tmp_path / "index"
    files = {"valor_covered/__init__.py": "", "valor_also/__init__.py": ""}
    write_wheel(wheels, "valor_covered", "1.0", "py3-none-any", files)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    source = (
        "import json\nimport valor_covered\nfrom valor_also import x\nimport helper\n"
        "import requests_not_there.sub\n" + HELLO
    )
    plugin = {"name": "w", "type": "python", "path": "w.py", "requirements": ["valor_covered"]}
    path = manifest(tmp_path / "p", [plugin], {"w.py": source, "helper.py": ""})
    build(path, tmp_path / "d")
    out = capsys.readouterr().out
    assert "plug-in 'w' imports requests_not_there (w.py:5), which neither" in out, out
    for covered in ("json", "valor_covered", "valor_also", "helper", "valor "):
        assert f"imports {covered}" not in out, out


@pytest.mark.timeout(300)
def test_a_package_outside_the_manifests_folder_is_bundled_whole(tmp_path: Path) -> None:
    elsewhere = tmp_path / "src" / "shelf"
    (elsewhere / "routers").mkdir(parents=True)
    for name in ("__init__.py", "routers/__init__.py", "models.py"):
        (elsewhere / name).write_text("")
    (elsewhere / "main.py").write_text("from . import models\n" + HELLO)
    plugin = {"name": "shelf", "type": "python", "path": "../src/shelf/main.py"}
    path = manifest(tmp_path / "p", [plugin], {})
    build(path, tmp_path / "d", quiet=True)
    shipped = json.loads((tmp_path / "d" / "plugins" / "plugins.json").read_text())
    assert shipped["plugins"][0]["path"] == "_external/shelf/shelf/main.py"
    for name in ("__init__.py", "routers/__init__.py", "models.py", "main.py"):
        assert (tmp_path / "d" / "plugins" / "_external" / "shelf" / "shelf" / name).is_file()
