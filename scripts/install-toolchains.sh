#!/usr/bin/env bash
# Toolchains for the non-Python plug-in kinds, then the examples built from source.
# C to wasm32 and native: clang, lld (wasm-ld), wasi-libc and the wasm32 compiler runtime (Debian
# packages), and clang's own runtime (libFuzzer, sanitizers, for the valor_abi.h fuzz test). Rust
# to wasm32 and native: Debian's rustc, cargo and libstd-rust-dev-wasm32 (whatever other Rust is on
# PATH: valor.toolchain picks the one with the wasm32 target). Deno (js), wasmtime (wasm, wasi)
# and httpx (proxy) are pip dependencies of valor.
# Idempotent: installs only what is missing, and rebuilds only changed sources.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/apt.sh

missing=()
command -v clang >/dev/null || missing+=(clang)
command -v wasm-ld >/dev/null || missing+=(lld)
[ -e /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a" >/dev/null \
  || missing+=(libclang-rt-dev-wasm32)
[ -x /usr/bin/rustc ] || missing+=(rustc)
[ -x /usr/bin/cargo ] || missing+=(cargo)
[ -d /usr/lib/rustlib/wasm32-unknown-unknown ] || missing+=(libstd-rust-dev-wasm32)
# libFuzzer and the sanitizers' runtimes, for the valor_abi.h fuzz test.
compgen -G "/usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a" >/dev/null \
  || missing+=(libclang-rt-dev)

[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"

python3 - <<'PY'
import importlib.util, subprocess, sys
wanted = [m for m in ("deno", "wasmtime", "httpx") if importlib.util.find_spec(m) is None]
if wanted:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *wanted])
PY

python3 -m valor.toolchain plugins/src >/dev/null
echo "toolchains ready; examples built in plugins/build/"
