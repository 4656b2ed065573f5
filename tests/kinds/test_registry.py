"""The kind registry (``valor.kinds``): every kind's loaders are where it says, a missing engine
fails only the plug-ins that need it, and the frame codec the helper processes share."""

from __future__ import annotations

import asyncio
import inspect
import io
import sys
from pathlib import Path

import pytest

from valor.build import KIND_FILES, PACKAGE_DIR
from valor.errors import PluginLoadError
from valor.kinds import KINDS, browser_loaders, server_loaders
from valor.kinds.shared.frames import (
    AbiError,
    pack_message,
    read_frame,
    receive_frame,
    unpack_message,
    write_frame,
)
from valor.manifest import parse_plugin


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_has_a_loader_on_each_host_that_runs_it(name: str) -> None:
    kind = KINDS[name]
    assert set(server_loaders()) == set(browser_loaders()) == set(KINDS)
    assert (kind.browser is None) == (kind.server_only is not None)
    for where in filter(None, (kind.server, kind.browser)):
        module, _, function = where.partition(":")
        if name in ("wasm", "wasi") and module.endswith(".server"):
            pytest.importorskip("wasmtime")
        loaded = __import__(f"valor.kinds.{module}", fromlist=[function])
        assert inspect.iscoroutinefunction(getattr(loaded, function)), where
    for site_name, source in kind.site_files:
        assert (PACKAGE_DIR / source).is_file(), source
        assert KIND_FILES[site_name] == source


def test_a_missing_engine_fails_only_its_plugins_and_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a server without wasmtime: its import fails (a None entry makes it raise).
    monkeypatch.setitem(sys.modules, "wasmtime", None)
    monkeypatch.delitem(sys.modules, "valor.kinds.wasm.server", raising=False)
    (tmp_path / "hello.py").write_text(
        "from valor import vlugin\n\n@vlugin\ndef hi(req):\n    return 'hi'\n"
    )
    (tmp_path / "hello.wasm").write_bytes(b"\x00asm")
    loaders = server_loaders()
    wasm = parse_plugin({"name": "w", "type": "wasm", "path": "hello.wasm"}, tmp_path)
    with pytest.raises(PluginLoadError) as failed:
        asyncio.run(loaders["wasm"](wasm))
    assert failed.value.reason == "wasm plug-ins need wasmtime (pip install wasmtime)"

    python = parse_plugin({"name": "p", "type": "python", "path": "hello.py"}, tmp_path)

    async def answer() -> bytes:
        plugin = await loaders["python"](python)
        try:
            request = {"url": "http://test/", "method": "GET", "headers": [], "body": None}
            return (await plugin.handle(request))["body"]
        finally:
            await plugin.close()

    assert asyncio.run(answer()) == b"hi"


def test_a_kind_only_the_server_runs_says_why_in_the_browser(tmp_path: Path) -> None:
    spec = parse_plugin({"name": "n", "type": "native", "path": "hello.so"}, tmp_path)
    with pytest.raises(PluginLoadError) as failed:
        asyncio.run(browser_loaders()["native"](spec))
    assert failed.value.reason == (
        "native plug-ins are shared libraries, which a browser cannot load; serve this one "
        "with the server host (valor serve), or build with --fallback URL to send its requests "
        "there"
    )


def test_frames_carry_messages_both_ways() -> None:
    stream = io.BytesIO()
    write_frame(stream, 7, pack_message({"status": 200}, b"\x00body"))
    write_frame(stream, 8, pack_message({"cancel": True}))
    stream.seek(0)
    first = read_frame(stream)
    assert first is not None and first[0] == 7
    assert unpack_message(first[1]) == ({"status": 200}, b"\x00body")

    async def receive() -> tuple[int, bytes]:
        reader = asyncio.StreamReader()
        reader.feed_data(stream.read())
        reader.feed_eof()
        return await receive_frame(reader)

    assert unpack_message(asyncio.run(receive())[1]) == ({"cancel": True}, b"")
    assert read_frame(stream) is None
    with pytest.raises(AbiError, match="head length 9 is past the end"):
        unpack_message(b"\x09\x00\x00\x00{}")
