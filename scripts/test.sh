#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run all of it.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k registry`); VALOR_TEST_BUSY=2 runs
# it with the CPU saturated.
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

# VALOR_TEST_BUSY=N runs N busy loops beside the suite, saturating the CPU, to prove that the
# tests wait on conditions rather than on timing (two loops fill this 2-core machine).
busy_loops=()
stop_busy_loops() { [ ${#busy_loops[@]} -eq 0 ] || kill "${busy_loops[@]}" 2>/dev/null || true; }
trap stop_busy_loops EXIT
for _ in $(seq 1 "${VALOR_TEST_BUSY:-0}"); do
  (while :; do :; done) &
  busy_loops+=($!)
done
[ ${#busy_loops[@]} -eq 0 ] || echo "==> ${#busy_loops[@]} busy loops beside the suite"

echo "==> pytest"
python3 -m pytest --durations=15 "$@"
