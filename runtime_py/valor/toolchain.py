"""Build plug-ins from source: ``python -m valor.toolchain SRC_DIR [OUT_DIR]``.

C: the kind is in the file name: ``X.wasm.c`` becomes ``OUT/X.wasm`` (a wasm plug-in),
``X.wasi.c`` becomes ``OUT/X.wasi.wasm`` (a WASI program) and ``X.native.c`` becomes
``OUT/X.so`` (a native shared library). ``OUT`` defaults to ``SRC_DIR/../build``. Outputs newer
than their source and the headers are kept, so reruns take milliseconds. ``valor_abi.h`` (the
C helper for the buffer format, in the package's ``static/``) is on the include path.
Needs clang with the wasm32 target, lld, wasi-libc and ``libclang-rt-dev-wasm32``.

Rust: a folder ``X/`` with a ``Cargo.toml`` (a ``cdylib`` using the ``valor`` crate in
``sdk/rust/``) becomes both ``OUT/X.wasm`` (a wasm plug-in, ``wasm32-unknown-unknown``) and
``OUT/X.so`` (a native plug-in): ``cargo build --offline --release``, cargo's own files in
``~/.cache/valor/cargo-target/`` (or ``CARGO_TARGET_DIR``). Needs a cargo and rustc with the
wasm32 target: Debian's ``rustc``, ``cargo`` and ``libstd-rust-dev-wasm32``, found even when
another Rust (rustup's, without that target) comes first on ``PATH``.

``scripts/install-toolchains.sh`` installs all of them.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

WASI_SYSROOT = "/usr"
# valor_abi.h, the C helper for the buffer format, ships in the package.
INCLUDE_DIR = Path(__file__).resolve().parent / "static"
# The Rust SDK, in a checkout of Valor (sdk/rust/valor); VALOR_RUST_SDK points elsewhere.
RUST_SDK = Path(
    os.environ.get("VALOR_RUST_SDK") or Path(__file__).resolve().parents[2] / "sdk/rust/valor"
)
RUST_WASM_TARGET = "wasm32-unknown-unknown"
RUST_PACKAGES = "rustc, cargo and libstd-rust-dev-wasm32"
# Each kind a crate builds to: its cargo --target (None: the host's) and the output's suffix.
RUST_KINDS = {"wasm": (RUST_WASM_TARGET, ".wasm"), "native": (None, ".so")}
_WASM = ["--target=wasm32-wasi", f"--sysroot={WASI_SYSROOT}", "-O2", "-Wl,--strip-all"]
TARGETS = {
    # A reactor has no main(); it only exports alloc/handle (and _initialize, run once).
    ".wasm.c": (".wasm", [*_WASM, "-mexec-model=reactor"]),
    ".wasi.c": (".wasi.wasm", _WASM),
    ".native.c": (".so", ["-O2", "-shared", "-fPIC"]),
}


class ToolchainError(RuntimeError):
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
    for crate in sorted(p.parent for p in src_dir.glob("*/Cargo.toml")):
        outputs += build_crate(crate, out_dir)
    return outputs


def build_crate(crate: Path, out_dir: Path) -> list[Path]:
    """Build a Rust plug-in crate to ``OUT/NAME.wasm`` and ``OUT/NAME.so`` (NAME: its folder)."""
    outputs = {kind: out_dir / (crate.name + suffix) for kind, (_, suffix) in RUST_KINDS.items()}
    inputs = [*_rust_sources(crate), *_rust_sources(RUST_SDK.parent)]
    newest = max(p.stat().st_mtime for p in inputs)
    if all(o.exists() and o.stat().st_mtime >= newest for o in outputs.values()):
        return list(outputs.values())
    cargo, rustc = find_rust()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RUSTC": rustc, "CARGO_TARGET_DIR": str(cargo_target_dir())}
    for kind, (triple, _) in RUST_KINDS.items():
        command = [cargo, "build", "--offline", "--release", "--lib", "--quiet"]
        command += ["--message-format=json-render-diagnostics"]
        command += ["--manifest-path", str(crate / "Cargo.toml")]
        command += ["--target", triple] if triple else []
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise ToolchainError(f"building {crate.name} ({kind}) failed:\n{result.stderr.strip()}")
        library = _cdylib(result.stdout, crate)
        if library is None:
            raise ToolchainError(f'{crate.name}: Cargo.toml needs [lib] crate-type = ["cdylib"]')
        partial = outputs[kind].with_name(outputs[kind].name + ".part")
        shutil.copyfile(library, partial)
        partial.replace(outputs[kind])
    return list(outputs.values())


def cargo_target_dir() -> Path:
    """Where cargo works: ``CARGO_TARGET_DIR`` if set, else one cache folder for every crate,
    so the SDK is compiled once, not once per plug-in folder."""
    if os.environ.get("CARGO_TARGET_DIR"):
        return Path(os.environ["CARGO_TARGET_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "valor" / "cargo-target"


def _rust_sources(folder: Path) -> list[Path]:
    return [
        p
        for pattern in ("Cargo.toml", "Cargo.lock", "*/Cargo.toml", "**/*.rs")
        for p in folder.glob(pattern)
        if "target" not in p.relative_to(folder).parts
    ]


def _cdylib(messages: str, crate: Path) -> str | None:
    """The cdylib cargo built for ``crate``, from its JSON messages."""
    manifest = str((crate / "Cargo.toml").resolve())
    for line in messages.splitlines():
        if not line.startswith("{"):
            continue
        message = json.loads(line)
        if message.get("reason") != "compiler-artifact":
            continue
        if message.get("manifest_path") == manifest and "cdylib" in message["target"]["kind"]:
            return next(f for f in message["filenames"] if f.endswith((".wasm", ".so")))
    return None


def find_rust(search: str | None = None) -> tuple[str, str]:
    """A ``(cargo, rustc)`` pair, from one folder, whose rustc has the wasm32 target's standard
    library: the folders of ``search`` (default: ``PATH``, then Debian's /usr/bin) in order.
    ``ToolchainError`` names the packages to install."""
    if search is None:
        search = os.pathsep.join((os.environ.get("PATH", ""), "/usr/bin"))
    return _find_rust(search)


@functools.cache
def _find_rust(search: str) -> tuple[str, str]:
    tried: list[str] = []
    for folder in dict.fromkeys(search.split(os.pathsep)):
        cargo, rustc = Path(folder, "cargo"), Path(folder, "rustc")
        if not folder or not (os.access(cargo, os.X_OK) and os.access(rustc, os.X_OK)):
            continue
        tried.append(str(rustc))
        if _has_target(str(rustc), RUST_WASM_TARGET):
            return str(cargo), str(rustc)
    install = f"install Debian's {RUST_PACKAGES} (scripts/install-toolchains.sh does)"
    if not tried:
        raise ToolchainError(f"Rust (cargo and rustc) is not installed: {install}")
    raise ToolchainError(
        f"no Rust here can build for {RUST_WASM_TARGET} (tried {', '.join(tried)}): {install}"
    )


def _has_target(rustc: str, triple: str) -> bool:
    try:
        sysroot = subprocess.run(
            [rustc, "--print", "sysroot"], capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except OSError:
        return False
    return bool(sysroot) and (Path(sysroot) / "lib/rustlib" / triple / "lib").is_dir()


def _compile(source: Path, target: Path) -> None:
    clang = shutil.which("clang")
    if clang is None:
        raise ToolchainError("clang is not installed: run scripts/install-toolchains.sh")
    flags = next(f for suffix, (_, f) in TARGETS.items() if source.name.endswith(suffix))
    # Write to a temporary name first so a failed build never leaves a half-written output.
    partial = target.with_name(target.name + ".part")
    include = ["-I", str(source.parent), "-I", str(INCLUDE_DIR)]
    command = [clang, *flags, *include, "-o", str(partial), str(source)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ToolchainError(f"building {source.name} failed:\n{result.stderr.strip()}")
    partial.replace(target)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    try:
        for output in build(Path(argv[0]), Path(argv[1]) if len(argv) > 1 else None):
            print(output)
    except ToolchainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
