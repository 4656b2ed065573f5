#!/usr/bin/env bash
# What benchmarks/ needs beside Python: wrk (load) and valgrind (--instructions), and taskset
# (util-linux) to pin server and load to cores. Idempotent: installs only what is missing.
set -euo pipefail
source "$(dirname "$0")/apt.sh"

missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v valgrind >/dev/null || missing+=(valgrind)
command -v taskset >/dev/null || missing+=(util-linux)

[ ${#missing[@]} -eq 0 ] || apt_install "${missing[@]}"
