#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run all of it.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k registry`).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"
# Each part installs its own tools; each script is idempotent. The toolchains come first: they
# build the example plug-ins that the browser bundle packs.
for script in scripts/install-toolchains.sh scripts/install-browser.sh scripts/install-docs.sh \
  scripts/install-store.sh; do
  echo "==> $script"
  bash "$script"
done

echo "==> ruff"
python3 -m ruff check .
python3 -m ruff format --check .

echo "==> pytest"
python3 -m pytest "$@"
