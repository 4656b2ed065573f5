#!/usr/bin/env bash
# What tests/test_docs.py needs beyond Python: curl, which the docs' examples use. Idempotent.
set -euo pipefail

if ! command -v curl >/dev/null; then
  echo "installing curl"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl
fi
