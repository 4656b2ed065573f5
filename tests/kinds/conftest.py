"""Fixtures for the plug-in kinds: examples and fixtures built from source, a real upstream for
the proxy kind, and a real ``valor serve`` with every kind mounted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REGISTRY_TOKEN
from tests.kinds.table import FAULTY_TIMEOUT, MAX_BODY, RUST_MOUNTS
from tests.servers import ROOT, Server, valor_server
from valor import toolchain
from valor.processes import free_port, stop_process

FIXTURES = Path(__file__).parent / "fixtures"

EXAMPLES = {"js": "hello.js", "wasm": "hello.wasm", "wasi": "hello.wasi.wasm", "native": "hello.so"}
FAULTY = {kind: path.replace("hello", "faulty") for kind, path in EXAMPLES.items()}
FAULTY_CONFIG = {
    "wasm-faulty": {"max_memory_mb": 16},  # /big grows past it
    "native-faulty": {"greeting": "hi"},  # /config answers it (valor_init)
}
# Files that are not what their kind needs, for the load-error tests.
GARBAGE = {
    "js": ("garbage.js", b"self.onmessage = (event) => {{{ not javascript"),
    "wasm": ("garbage.wasm", b"\x00asm but not really a module"),
    "wasi": ("garbage.wasi.wasm", b"#!/bin/sh\necho not wasm\n"),
    "native": ("garbage.so", b"\x7fELF but truncated"),
}


def build_site(folder: Path) -> Path:
    """Build the examples and fixtures from source and copy them into ``folder``."""
    built = toolchain.build(ROOT / "plugins" / "src") + toolchain.build(FIXTURES / "src")
    for path in [ROOT / "plugins" / "hello.js", FIXTURES / "faulty.js", *built]:
        shutil.copy(path, folder / path.name)
    for name, content in GARBAGE.values():
        (folder / name).write_bytes(content)
    return folder


def kinds_manifest(upstream: str) -> dict:
    plugins = []
    for kind, path in EXAMPLES.items():
        plugins.append({"name": kind, "type": kind, "path": path})
        plugins.append(
            {"name": f"{kind}-faulty", "type": kind, "path": FAULTY[kind],
             "timeout": FAULTY_TIMEOUT}
        )  # fmt: skip
    for plugin in plugins:
        if plugin["name"] in FAULTY_CONFIG:
            plugin["config"] = FAULTY_CONFIG[plugin["name"]]
    for mount, kind in RUST_MOUNTS.items():
        suffix = EXAMPLES[kind][len("hello") :]  # the same crates, built to .wasm and .so
        plugins += [
            {"name": mount, "type": kind, "path": "hello-rust" + suffix},
            {"name": f"{mount}-faulty", "type": kind, "path": "faulty-rust" + suffix,
             "timeout": FAULTY_TIMEOUT},
            {"name": f"greeter-{mount}", "type": kind, "path": "greeter-rust" + suffix,
             "config": {"name": "Alice"}},
        ]  # fmt: skip
    plugins += [
        {"name": "wasm-fuel", "type": "wasm", "path": "hello.wasm", "config": {"fuel": 100}},
        # Its own Deno process: /grow ends it (V8 out of memory), which would fail other tests.
        {
            "name": "js-grow",
            "type": "js",
            "path": "faulty.js",
            "timeout": 20,
            "config": {"max_memory_mb": 64},
        },
        {"name": "proxy", "type": "proxy", "url": upstream},
        {"name": "proxy-faulty", "type": "proxy", "url": upstream, "timeout": FAULTY_TIMEOUT},
        {"name": "proxy-down", "type": "proxy", "url": f"http://127.0.0.1:{free_port()}/base"},
    ]
    return {"plugins": plugins}


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``tests/kinds/fixtures/upstream.py`` under a real uvicorn on 127.0.0.1."""
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "uvicorn.log"
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.kinds.fixtures.upstream:app",
             "--port", str(port), "--log-level", "warning", "--timeout-graceful-shutdown", "1"],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"upstream did not start:\n{log.read_text()}") from None
                time.sleep(0.05)
        yield url
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def kinds_site(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Path:
    folder = build_site(tmp_path_factory.mktemp("kinds"))
    (folder / "plugins.json").write_text(json.dumps(kinds_manifest(upstream), indent=2))
    return folder


@pytest.fixture(scope="module")
def kinds_server(kinds_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with valor_server(
        kinds_site / "plugins.json",
        "--registry",
        "--token",
        REGISTRY_TOKEN,
        "--max-body-size",
        str(MAX_BODY),
        log_dir=tmp_path_factory.mktemp("kinds-server"),
    ) as running:
        yield running
