#!/usr/bin/env bash
# What the store's tests need beyond Python: Debian's redis-server (tests start their own on a
# free port; the package's service is not used) and the redis client package. Idempotent.
set -euo pipefail

if ! command -v redis-server >/dev/null; then
  echo "installing redis-server"
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    redis-server
fi
python3 -c "import redis" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check "redis>=5"
