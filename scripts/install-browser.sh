#!/usr/bin/env bash
# Everything the browser host and its tests need, on a fresh Debian machine. Idempotent:
# a second run only checks. Chromium from apt, Pyodide (pinned in package-lock.json) from npm,
# Playwright for Python from pip (it drives the system Chromium; no browser download).
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/apt.sh

if [ ! -x /usr/bin/chromium ]; then
  apt_install chromium
fi
if ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi

# Pyodide, the WASI shim the wasm executor runs WASI plug-ins on, and msw (the peer that
# benchmarks/browser.py measures Valor against).
pinned() { node -p "require('./package-lock.json').packages['node_modules/$1'].version"; }
installed() { node -p "try { require('./node_modules/$1/package.json').version } catch { '' }"; }
wanted=$(pinned pyodide)
stale=""
for package in pyodide @bjorn3/browser_wasi_shim msw @playwright/test; do
  [ "$(pinned $package)" = "$(installed $package)" ] || stale=1
done
if [ -n "$stale" ]; then
  echo "installing pyodide $wanted, the WASI shim, msw and @playwright/test with npm ci"
  # @playwright/test drives the system Chromium in the tests: no browser download.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi

python3 -m pip install --quiet --disable-pip-version-check "playwright>=1.45" "pytest-playwright>=0.5"

# One build fills the bundler's cache (micropip and packaging wheels), so the tests' builds
# need no network.
scratch=$(mktemp -d)
python3 build.py plugins/plugins.json --out "$scratch/dist" --quiet
rm -rf "$scratch"
echo "browser host: chromium $(/usr/bin/chromium --version 2>/dev/null | awk '{print $2}'), pyodide $wanted"
