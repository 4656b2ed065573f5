"""Build C plug-ins from source: ``python -m valor.toolchain SRC_DIR [OUT_DIR]``.

The kind is in the file name: ``X.wasm.c`` becomes ``OUT/X.wasm`` (a wasm plug-in),
``X.wasi.c`` becomes ``OUT/X.wasi.wasm`` (a WASI program) and ``X.native.c`` becomes
``OUT/X.so`` (a native shared library). ``OUT`` defaults to ``SRC_DIR/../build``. Outputs newer
than their source and the headers are kept, so reruns take milliseconds. ``valor_abi.h`` (the
C helper for the buffer format, in the package's ``static/``) is on the include path.
Needs clang with the wasm32 target, lld, wasi-libc and ``libclang-rt-dev-wasm32``
(``scripts/install-toolchains.sh`` installs them).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

WASI_SYSROOT = "/usr"
# valor_abi.h, the C helper for the buffer format, ships in the package.
INCLUDE_DIR = Path(__file__).resolve().parent / "static"
_WASM = ["--target=wasm32-wasi", f"--sysroot={WASI_SYSROOT}", "-O2", "-Wl,--strip-all"]
TARGETS = {
    # A reactor has no main(); it only exports alloc/handle (and _initialize, run once).
    ".wasm.c": (".wasm", [*_WASM, "-mexec-model=reactor"]),
    ".wasi.c": (".wasi.wasm", _WASM),
    ".native.c": (".so", ["-O2", "-shared", "-fPIC"]),
}


class BuildError(RuntimeError):
    """A source that did not compile, or a missing compiler."""


def output_for(source: Path, out_dir: Path) -> Path | None:
    """Where ``source`` is built to, or None when its name names no kind."""
    for suffix, (out_suffix, _) in TARGETS.items():
        if source.name.endswith(suffix):
            return out_dir / (source.name[: -len(suffix)] + out_suffix)
    return None


def build(src_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Compile every plug-in source in ``src_dir``; returns the outputs, built or up to date."""
    src_dir = Path(src_dir)
    out_dir = Path(out_dir) if out_dir else src_dir.parent / "build"
    headers = [*src_dir.glob("*.h"), *INCLUDE_DIR.glob("*.h")]
    outputs = []
    for source in sorted(src_dir.glob("*.c")):
        target = output_for(source, out_dir)
        if target is None:
            continue
        inputs = [source, *headers]
        if not target.exists() or target.stat().st_mtime < max(p.stat().st_mtime for p in inputs):
            out_dir.mkdir(parents=True, exist_ok=True)
            _compile(source, target)
        outputs.append(target)
    return outputs


def _compile(source: Path, target: Path) -> None:
    clang = shutil.which("clang")
    if clang is None:
        raise BuildError("clang is not installed: run scripts/install-toolchains.sh")
    flags = next(f for suffix, (_, f) in TARGETS.items() if source.name.endswith(suffix))
    # Write to a temporary name first so a failed build never leaves a half-written output.
    partial = target.with_name(target.name + ".part")
    include = ["-I", str(source.parent), "-I", str(INCLUDE_DIR)]
    command = [clang, *flags, *include, "-o", str(partial), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"building {source.name} failed:\n{result.stderr.strip()}")
    partial.replace(target)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        for output in build(Path(argv[0]), Path(argv[1]) if len(argv) > 1 else None):
            print(output)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
