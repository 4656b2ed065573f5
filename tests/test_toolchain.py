"""``valor.toolchain`` for Rust: the original Valor's example builds to both kinds and answers;
the right rustc is found; a crate that does not compile is a clear error and leaves nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from valor import toolchain
from valor.testing import TestClient

# The original Valor's example, unchanged but for the `use` line.
ORIGINAL = """\
use valor::*;

#[vlugin]
fn my_handler(req: Request) -> Response {
    "Hello Plugin!".into()
}
"""


def write_crate(folder: Path, name: str, source: str) -> Path:
    crate = folder / name
    (crate / "src").mkdir(parents=True)
    (crate / "src" / "lib.rs").write_text(source)
    sdk = json.dumps(toolchain.RUST_SDK.as_posix())
    (crate / "Cargo.toml").write_text(
        f'[package]\nname = "{name}"\nversion = "0.1.0"\nedition = "2021"\n\n'
        f'[lib]\ncrate-type = ["cdylib"]\n\n[dependencies]\nvalor = {{ path = {sdk} }}\n'
    )
    return crate


def test_the_original_example_builds_to_wasm_and_native_and_answers(tmp_path: Path) -> None:
    crate = write_crate(tmp_path / "src", "original", ORIGINAL)
    outputs = toolchain.build(tmp_path / "src", tmp_path / "build")
    assert outputs == [tmp_path / "build" / "original.wasm", tmp_path / "build" / "original.so"]
    assert outputs[0].read_bytes()[:4] == b"\0asm" and outputs[1].read_bytes()[:4] == b"\x7fELF"
    manifest = tmp_path / "plugins.json"
    plugins = [
        {"name": "as-wasm", "type": "wasm", "path": "build/original.wasm"},
        {"name": "as-native", "type": "native", "path": "build/original.so"},
    ]
    manifest.write_text(json.dumps({"plugins": plugins}))
    with TestClient(manifest) as client:
        for name in ("as-wasm", "as-native"):
            answer = client.get(f"/{name}/any/path")
            assert (answer.status_code, answer.text) == (200, "Hello Plugin!"), name
            assert answer.headers["content-type"] == "text/plain; charset=utf-8"

    # Up to date: nothing is rebuilt; a changed source is.
    built = {path: path.stat().st_mtime_ns for path in outputs}
    assert toolchain.build(tmp_path / "src", tmp_path / "build") == outputs
    assert {path: path.stat().st_mtime_ns for path in outputs} == built
    source = crate / "src" / "lib.rs"
    source.write_text(source.read_text().replace("Hello Plugin!", "Changed"))
    toolchain.build(tmp_path / "src", tmp_path / "build")
    assert all(path.stat().st_mtime_ns > built[path] for path in outputs)
    assert b"Changed" in outputs[0].read_bytes()


def test_a_crate_that_does_not_compile_is_a_clear_error(tmp_path: Path) -> None:
    write_crate(tmp_path / "src", "broken", ORIGINAL.replace('"Hello Plugin!"', "2.5"))
    with pytest.raises(toolchain.ToolchainError) as failed:
        toolchain.build(tmp_path / "src", tmp_path / "build")
    message = str(failed.value)
    assert "building broken (wasm) failed" in message and "Response" in message, message
    assert not list((tmp_path / "build").glob("broken*"))


def test_vlugin_names_what_it_accepts(tmp_path: Path) -> None:
    write_crate(tmp_path / "src", "three", ORIGINAL.replace("req: Request", "a: u8, b: u8, c: u8"))
    with pytest.raises(toolchain.ToolchainError, match=r"#\[vlugin\] marks fn\(req: Request\)"):
        toolchain.build(tmp_path / "src", tmp_path / "build")


def fake_rust(folder: Path) -> Path:
    """A cargo and rustc whose standard library has no wasm32 target (as rustup's default)."""
    folder.mkdir()
    for tool in ("cargo", "rustc"):
        script = folder / tool
        script.write_text(f"#!/bin/sh\necho {folder / 'sysroot'}\n")
        script.chmod(0o755)
    return folder


def test_finds_a_rust_with_the_wasm_target_behind_one_without(tmp_path: Path) -> None:
    fake = fake_rust(tmp_path / "bin")
    cargo, rustc = toolchain.find_rust(os.pathsep.join([str(fake), "/usr/bin"]))
    assert (cargo, rustc) == ("/usr/bin/cargo", "/usr/bin/rustc")


def test_no_rust_with_the_wasm_target_names_the_packages(tmp_path: Path) -> None:
    fake = fake_rust(tmp_path / "bin")
    with pytest.raises(toolchain.ToolchainError) as failed:
        toolchain.find_rust(str(fake))
    message = str(failed.value)
    assert "wasm32-unknown-unknown" in message and str(fake / "rustc") in message
    assert "rustc, cargo and libstd-rust-dev-wasm32" in message
    with pytest.raises(toolchain.ToolchainError, match="is not installed"):
        toolchain.find_rust(str(tmp_path))


def test_the_rust_sdk_passes_its_own_tests() -> None:
    """The SDK's unit tests (JSON as Python writes it, the buffer format, Request and
    Response), with the same cargo and rustc the plug-ins are built with."""
    import subprocess

    cargo, rustc = toolchain.find_rust()
    env = {**os.environ, "RUSTC": rustc, "CARGO_TARGET_DIR": str(toolchain.cargo_target_dir())}
    manifest = toolchain.RUST_SDK / "Cargo.toml"
    done = subprocess.run(
        [cargo, "test", "--offline", "--quiet", "--lib", "--manifest-path", str(manifest)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "test result: ok" in done.stdout
