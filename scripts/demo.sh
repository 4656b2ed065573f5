#!/usr/bin/env bash
# Set up and run the main job: serve the example plug-ins over HTTP on 127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e .
exec valor serve plugins/plugins.json --host 127.0.0.1 --port "${PORT:-8000}" "$@"
