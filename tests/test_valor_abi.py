"""``valor_abi.h`` under AddressSanitizer and UndefinedBehaviorSanitizer: the two inputs that
overflowed a buffer in ``valor_after``, every time, and libFuzzer for a few seconds when the
compiler has it (``tests/fuzz/valor_abi_fuzz.c``; run it longer by hand, see docs/security.md)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "fuzz" / "valor_abi_fuzz.c"
INCLUDE = ROOT / "runtime_py" / "valor" / "static"
SANITIZERS = "-fsanitize=address,undefined"
STRICT = ["-fno-sanitize-recover=all", "-g", "-O1", f"-I{INCLUDE}"]


def request(head: str, body: bytes = b"") -> bytes:
    raw = head.encode()
    return struct.pack("<I", len(raw)) + raw + body


def overflowing_inputs() -> dict[str, bytes]:
    # Both end a value with an escape ("\\" then a character) right where the output buffer
    # has room for one character and the terminator: the escape wrote two.
    content_type = "a" * 254 + '\\"'  # 256 characters into valor_header's 256-byte buffer
    url = "http://h/" + "b" * (2046 - len("http://h/")) + "\\u"  # the escape at index 2046
    return {
        "content-type": request(
            json.dumps({"method": "GET", "url": "/", "headers": []})[:-2]
            + f'[["content-type","{content_type}"]]}}'
        ),
        "url": request('{"method":"GET","url":"' + url + '","headers":[]}'),
    }


def build(compiler: str, flags: list[str], output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [compiler, *flags, *STRICT, str(HARNESS), "-o", str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def regression_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("abi-inputs")
    paths = []
    for name, data in overflowing_inputs().items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


@pytest.mark.parametrize("compiler", ["cc", "clang"])
def test_the_overflowing_inputs_stay_inside_their_buffers(
    compiler: str, regression_inputs: list[Path], tmp_path: Path
) -> None:
    if shutil.which(compiler) is None:
        pytest.skip(f"no {compiler}")
    binary = tmp_path / "valor_abi_check"
    built = build(compiler, [SANITIZERS, "-DVALOR_STANDALONE"], binary)
    if built.returncode != 0 and "sanitize" in built.stderr:
        pytest.skip(f"{compiler} has no AddressSanitizer here: {built.stderr[-200:]}")
    assert built.returncode == 0, built.stderr
    for path in regression_inputs:
        ran = subprocess.run([binary, path], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert "runtime error" not in ran.stderr and "AddressSanitizer" not in ran.stderr


def test_libfuzzer_finds_nothing_in_a_few_seconds(
    regression_inputs: list[Path], tmp_path: Path
) -> None:
    if shutil.which("clang") is None:
        pytest.skip("no clang")
    binary = tmp_path / "valor_abi_fuzz"
    built = build("clang", [f"{SANITIZERS},fuzzer"], binary)
    if built.returncode != 0:
        pytest.skip(f"clang cannot build a libFuzzer target here: {built.stderr[-300:]}")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for path in regression_inputs:
        shutil.copy(path, corpus / path.name)
    ran = subprocess.run(
        [binary, "-max_total_time=5", "-max_len=4096", "-seed=1", str(corpus)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
