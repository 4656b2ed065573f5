"""A stream of many small parts, browser against server: ``--rows`` parts of a few bytes, read
to its end from ``valor serve plugins/asgi.json`` (the baseline, with httpx) and through the
service worker from the bundle of the same manifest in headless Chromium (``fetch()`` and a
reader in the page, timed in the page). Two streams: a FastAPI ``StreamingResponse`` of CSV
rows from a sync generator (``plugins/readinglist``, ``/readinglist/books.csv?rows=N``: a
thread per row on the server, inline in the browser) and a Starlette ``StreamingResponse``
from an async generator (``plugins/board``, ``/board/count?to=N``). Best of ``--rounds``.
Target: the browser at most 3x the server.

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


STREAMS = {
    "fastapi-sync": "/readinglist/books.csv?rows={rows}",
    "starlette-async": "/board/count?to={rows}",
}


def server_times(path: str, rounds: int) -> tuple[list[float], int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "runtime_py")}
    command = [sys.executable, "-m", "valor.cli", "serve", str(MANIFEST), "--port", str(port)]
    command += ["--log-level", "warning"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}{path}"
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


def browser_times(
    paths: dict[str, str], rounds: int, folder: Path
) -> dict[str, tuple[list[float], int, int]]:
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
            page.set_default_timeout(600_000)
            page.evaluate("() => Valor.start().then(() => Valor.loaded())")
            figures = {}
            for name, path in paths.items():
                results = [page.evaluate(READ, site.url + path[1:]) for _ in range(rounds)]
                last = results[-1]
                figures[name] = ([r["ms"] for r in results], last["size"], last["parts"])
            browser.close()
    finally:
        site.shutdown()
        site.server_close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    paths = {name: path.format(rows=args.rows) for name, path in STREAMS.items()}
    server = {name: server_times(path, args.rounds) for name, path in paths.items()}
    with tempfile.TemporaryDirectory() as work:
        browser = browser_times(paths, args.rounds, Path(work) / "site")
    print(f"{args.rows} parts, best of {args.rounds} (ms):")
    for name in paths:
        (on_server, server_size), (in_browser, browser_size, parts) = server[name], browser[name]
        if browser_size != server_size:
            raise SystemExit(f"{name}: the hosts sent {server_size} and {browser_size} bytes")
        ratio = min(in_browser) / min(on_server)
        verdict = "ok" if ratio <= 3 else "MISSED"
        print(f"  {name}, {server_size} bytes:")
        print(f"    server  {min(on_server):8.0f}   ({', '.join(f'{t:.0f}' for t in on_server)})")
        print(f"    browser {min(in_browser):8.0f}   ({', '.join(f'{t:.0f}' for t in in_browser)}),"
              f" {parts} parts read by the page")  # fmt: skip
        print(f"    browser / server: {ratio:.2f}x (target <= 3x) {verdict}")


if __name__ == "__main__":
    main()
