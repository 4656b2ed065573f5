#!/usr/bin/env bash
# Set up and run the main job: serve the example plug-ins over HTTP on 127.0.0.1:8000 (server
# host), and build them into the browser bundle served on 127.0.0.1:8080 (browser host: open
# the printed URL for the demo page).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e .
# The wasm, wasi and native examples are compiled from source (idempotent).
bash scripts/install-toolchains.sh
# npm fetches the pinned Pyodide for the bundle (skipped when already there).
[ -d node_modules/pyodide ] || npm ci --no-audit --no-fund --loglevel=error
# The bundle's static server runs beside the server host; Ctrl+C stops both.
python3 build.py plugins/plugins.json --out dist --serve --port "${BUNDLE_PORT:-8080}" &
bundle=$!
trap 'kill "$bundle" 2>/dev/null' EXIT
valor serve plugins/plugins.json --host 127.0.0.1 --port "${PORT:-8000}" "$@"
