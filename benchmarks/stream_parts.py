"""A stream of many small parts, browser against server: a FastAPI ``StreamingResponse`` of
``--rows`` CSV rows (``plugins/readinglist``, ``GET /readinglist/books.csv?rows=N``, one part
per row from a sync generator), read to its end from ``valor serve plugins/asgi.json`` (the
baseline, with httpx) and through the service worker from the bundle of the same manifest in
headless Chromium (``fetch()`` and a reader in the page, timed in the page). Best of
``--rounds``. Target: the browser at most 3x the server.

Chromium is driven by Playwright here (the time is taken inside the page, and the body never
crosses to Playwright); Playwright slows a service worker's traffic somewhat, so the ratio is
if anything pessimistic.

    python benchmarks/stream_parts.py [--rows 50000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "runtime_py"))

from valor.build import build, serve  # noqa: E402
from valor.processes import free_port, stop_process  # noqa: E402
from valor.testing.hosts import CHROMIUM_ARGS  # noqa: E402

MANIFEST = ROOT / "plugins" / "asgi.json"
BLANK = '<!doctype html><meta charset="utf-8"><script type="module" src="valor.js"></script>'
READ = """async (url) => {
  const started = performance.now();
  const response = await fetch(url);
  const reader = response.body.getReader();
  let size = 0, parts = 0;
  for (let part = await reader.read(); !part.done; part = await reader.read()) {
    size += part.value.length;
    parts++;
  }
  return {ms: performance.now() - started, size, parts};
}"""


def server_times(rows: int, rounds: int) -> tuple[list[float], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime_py")}
    command = [sys.executable, "-m", "valor.cli", "serve", str(MANIFEST), "--port", str(port)]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/readinglist/books.csv?rows={rows}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/_health", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise SystemExit("valor serve did not start") from None
                time.sleep(0.05)
        times, size = [], 0
        with httpx.Client(timeout=600) as client:
            for _ in range(rounds):
                started = time.perf_counter()
                with client.stream("GET", url) as answer:
                    size = sum(len(part) for part in answer.iter_raw())
                times.append((time.perf_counter() - started) * 1000)
        return times, size
    finally:
        stop_process(process)


def browser_times(rows: int, rounds: int, folder: Path) -> tuple[list[float], int, int]:
    from playwright.sync_api import sync_playwright

    build(MANIFEST, folder, base="/", quiet=True)
    (folder / "blank.html").write_text(BLANK)
    site = serve(folder, "/")
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page()
            page.goto(site.url + "blank.html")
            page.evaluate("() => Valor.start().then(() => Valor.loaded())", timeout=300_000)
            url = site.url + f"readinglist/books.csv?rows={rows}"
            results = [page.evaluate(READ, url) for _ in range(rounds)]
            browser.close()
    finally:
        site.shutdown()
        site.server_close()
    return [r["ms"] for r in results], results[-1]["size"], results[-1]["parts"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server, server_size = server_times(args.rows, args.rounds)
    with tempfile.TemporaryDirectory() as work:
        browser, browser_size, parts = browser_times(args.rows, args.rounds, Path(work) / "site")
    if browser_size != server_size:
        raise SystemExit(f"the hosts sent different sizes: {server_size} and {browser_size}")
    best_server, best_browser = min(server), min(browser)
    ratio = best_browser / best_server
    print(f"{args.rows} rows, {server_size} bytes, best of {args.rounds}:")
    print(f"  server  {best_server:8.0f} ms   ({', '.join(f'{t:.0f}' for t in server)})")
    print(f"  browser {best_browser:8.0f} ms   ({', '.join(f'{t:.0f}' for t in browser)}),"
          f" {parts} parts read by the page")  # fmt: skip
    print(f"  browser / server: {ratio:.2f}x (target <= 3x) {'ok' if ratio <= 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
