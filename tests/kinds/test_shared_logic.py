"""The pure-Python logic both hosts share: the ABI, CGI, proxy rules, limits, the builder."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from valor import toolchain
from valor.errors import PluginLoadError
from valor.kinds.proxy.rules import forward_headers, relay_headers, upstream_url
from valor.kinds.shared.abi import AbiError, decode_response, encode_request, unpack_pointer
from valor.kinds.wasi.cgi import CgiError, cgi_environ, parse_cgi_output
from valor.kinds.wasm.limits import wasm_limits
from valor.manifest import parse_plugin

REQUEST = {
    "url": "http://example.test:8080/echo/x?a=1&b=2",
    "method": "POST",
    "headers": [
        ["content-type", "text/plain"],
        ["x-forwarded-prefix", "/api"],
        ["accept", "a/b"],
        ["accept", "c/d"],
        ["authorization", "Bearer secret"],
    ],
    "body": b"\x00\xffbody",
}


def test_abi_request_is_length_head_body() -> None:
    buffer = encode_request(REQUEST)
    (size,) = struct.unpack_from("<I", buffer)
    assert buffer[4 + size :] == b"\x00\xffbody"
    assert buffer[4 : 4 + size].startswith(b'{"method":"POST","url":"http://example.test')


def test_abi_response_round_trip_and_errors() -> None:
    head = b'{"status":201,"headers":[["x-a","1"]]}'
    answer = decode_response(struct.pack("<I", len(head)) + head + b"raw\x00")
    assert answer == {"status": 201, "headers": [["x-a", "1"]], "body": b"raw\x00"}
    for bad, reason in [
        (b"\x01", "at least 4 bytes"),
        (struct.pack("<I", 99) + b"{}", "past the end"),
        (struct.pack("<I", 2) + b"{]", "not valid JSON"),
        (struct.pack("<I", 2) + b"[]", "must be a JSON object"),
        (struct.pack("<I", 14) + b'{"status":999}', "from 100 to 599"),
    ]:
        with pytest.raises(AbiError, match=reason):
            decode_response(bad)


def test_packed_pointer_from_a_signed_i64() -> None:
    assert unpack_pointer(-(1 << 63) | (5 << 32) | 7) == ((1 << 31) | 5, 7)
    assert unpack_pointer((1024 << 32) | 13) == (1024, 13)


def test_cgi_environment() -> None:
    env = cgi_environ(REQUEST)
    assert env["REQUEST_METHOD"] == "POST"
    assert env["PATH_INFO"] == "/echo/x"
    assert env["QUERY_STRING"] == "a=1&b=2"
    assert env["SCRIPT_NAME"] == "/api"
    assert env["REQUEST_URI"] == "/api/echo/x?a=1&b=2"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "6"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.test", "8080")
    assert env["HTTP_ACCEPT"] == "a/b, c/d"
    assert "HTTP_AUTHORIZATION" not in env and "HTTP_CONTENT_TYPE" not in env


def test_cgi_output() -> None:
    answer = parse_cgi_output(b"Status: 404 Not Found\r\nX-A: 1\r\n\r\nbody\n\nmore")
    assert answer == {"status": 404, "headers": [["x-a", "1"]], "body": b"body\n\nmore"}
    assert parse_cgi_output(b"Location: /x\n\n")["status"] == 302
    assert parse_cgi_output(b"Content-Type: a/b\n\n")["status"] == 200
    for bad, reason in [
        (b"no block", "no header block"),
        (b"Status: abc\n\n", "bad Status"),
        (b"not a header\n\n", "bad header line"),
    ]:
        with pytest.raises(CgiError, match=reason):
            parse_cgi_output(bad)


def test_proxy_rules() -> None:
    assert upstream_url("http://up:1/base/", "http://me/x/y?q=1") == "http://up:1/base/x/y?q=1"
    assert upstream_url("http://up:1", "http://me/") == "http://up:1/"
    sent = dict(
        forward_headers([["host", "me"], ["connection", "close"], ["x-a", "1"]], "https://me:9/x")
    )
    assert sent == {"x-a": "1", "x-forwarded-host": "me:9", "x-forwarded-proto": "https"}
    relayed = relay_headers(
        [("transfer-encoding", "chunked"), ("x-valor-plugin", "up"), ("a", "b")]
    )
    assert relayed == [["a", "b"]]


def test_wasm_limits_come_from_config() -> None:
    def spec(config: dict) -> object:
        return parse_plugin(
            {"name": "w", "type": "wasm", "path": "w.wasm", "config": config}, Path("/")
        )

    limits = wasm_limits(spec({"max_memory_mb": 2, "fuel": 10}))
    assert (limits.max_memory, limits.fuel, limits.timeout) == (2 * 1024 * 1024, 10, 30.0)
    assert wasm_limits(spec({})).fuel is None
    with pytest.raises(PluginLoadError, match="'fuel' must be a positive integer"):
        wasm_limits(spec({"fuel": -1}))
    with pytest.raises(PluginLoadError, match="'max_memory_mb' must be a positive number"):
        wasm_limits(spec({"max_memory_mb": "lots"}))


def test_builder_names_outputs_by_kind_and_reports_compile_errors(tmp_path: Path) -> None:
    out = tmp_path / "build"
    assert toolchain.output_for(Path("a.wasm.c"), out) == out / "a.wasm"
    assert toolchain.output_for(Path("a.wasi.c"), out) == out / "a.wasi.wasm"
    assert toolchain.output_for(Path("a.native.c"), out) == out / "a.so"
    assert toolchain.output_for(Path("a.c"), out) is None
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.wasi.c").write_text("int main(void) { return 0; }\n")
    (built,) = toolchain.build(src)
    assert built == tmp_path / "build" / "ok.wasi.wasm" and built.read_bytes()[:4] == b"\0asm"
    stamp = built.stat().st_mtime_ns
    assert toolchain.build(src) == [built] and built.stat().st_mtime_ns == stamp  # up to date
    (src / "bad.native.c").write_text("this is not C\n")
    with pytest.raises(toolchain.ToolchainError, match=r"building bad\.native\.c failed"):
        toolchain.build(src)
    assert not (tmp_path / "build" / "bad.so").exists()


def test_the_memory_cap_is_written_into_the_module() -> None:
    """Both hosts cap a module's memory the same way: its declared maximum (so memory.grow
    fails past it in wasmtime and in a browser alike)."""
    import wasmtime

    from valor.kinds.wasm.limits import capped_module

    built = toolchain.build(Path(__file__).parents[2] / "plugins" / "src")
    for path in [p for p in built if p.suffix == ".wasm"]:
        capped = capped_module(path.read_bytes(), 16 * 1024 * 1024)
        module = wasmtime.Module(wasmtime.Engine(), capped)
        memory = next(e.type for e in module.exports if isinstance(e.type, wasmtime.MemoryType))
        assert memory.limits.max == 256, path  # 16 MiB in 64 KiB pages
        again = capped_module(capped, 64 * 1024 * 1024)  # a larger cap never raises a maximum
        assert again == capped
    assert capped_module(b"not wasm", 1) == b"not wasm"
    assert capped_module(b"\0asm\x01\0\0\0\x05\x09", 1) == b"\0asm\x01\0\0\0\x05\x09"  # truncated
