#!/usr/bin/env bash
# What the store's tests need beyond Python: Debian's redis-server (tests start their own on a
# free port; the package's service is not used) and the redis client package. Idempotent.
set -euo pipefail

source "$(dirname "$0")/apt.sh"

command -v redis-server >/dev/null || apt_install redis-server
python3 -c "import redis" 2>/dev/null ||
  python3 -m pip install --quiet --disable-pip-version-check "redis>=5"
