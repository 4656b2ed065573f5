"""The browser's store: get, set and increment through the Valor store (IndexedDB, from Python
in the runtime worker) beside IndexedDB driven from plain JavaScript in the same worker of the
same Chromium, in the same run. Target: Valor's p50 at most 1.5x plain IndexedDB's.

Plain headless Chromium (not Playwright), a new profile, a static host with cross-origin
isolation (5 us timers). The page (``store_pages/bench.html``) asks the bundle's
``store-bench`` plug-in for rounds of 50 calls, the sides taking turns, each call timed in the
worker where it runs (Python's clock for Valor's, ``performance.now()`` for JavaScript's),
and posts the figures back. A third side awaits the plain JavaScript calls from Python: what
waiting for IndexedDB costs any Python code in Pyodide (an event-loop turn per await). For get,
a fourth: the least any read from Python can cost (one call into JavaScript, one call back, the
waiting task resumed inside the event, as the store does it).

    python benchmarks/store_browser.py [--ops 2000]
"""

from __future__ import annotations

import argparse
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "runtime_py"))

from valor.build import build  # noqa: E402
from valor.static import MIME_TYPES  # noqa: E402
from valor.testing.hosts import CHROMIUM_ARGS as HEADLESS_ARGS  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", *HEADLESS_ARGS, "--disable-extensions"]
PAGES = Path(__file__).resolve().parent / "store_pages"
OPERATIONS = ("get", "set", "increment")


class BenchServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), BenchHandler)
        self.folder = folder
        self.results: dict[str, Any] | None = None
        self.done = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_port}/"


class BenchHandler(http.server.SimpleHTTPRequestHandler):
    """The bundle, cross-origin isolated, and ``POST /results``."""

    extensions_map = MIME_TYPES  # type: ignore[assignment]
    server: BenchServer

    def translate_path(self, path: str) -> str:
        relative = path.split("?", 1)[0].lstrip("/") or "index.html"
        return str(self.server.folder / relative)

    def end_headers(self) -> None:
        self.send_header("cross-origin-opener-policy", "same-origin")
        self.send_header("cross-origin-embedder-policy", "require-corp")
        self.send_header("cache-control", "no-cache")
        super().end_headers()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.results = json.loads(body)
        self.send_response(204)
        self.end_headers()
        self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def measure(ops: int, timeout: float = 900.0) -> dict[str, Any]:
    """Build the bench bundle, run the page once in a new profile; the page's figures."""
    work = Path(tempfile.mkdtemp(prefix="valor-store-bench-"))
    try:
        build(PAGES / "plugins.json", work / "dist", quiet=True)
        shutil.copy(PAGES / "bench.html", work / "dist" / "bench.html")
        server = BenchServer(work / "dist")
        threading.Thread(target=server.serve_forever, daemon=True).start()
        command = [
            CHROMIUM,
            *CHROMIUM_ARGS,
            f"--user-data-dir={work / 'profile'}",
            f"{server.url}bench.html?ops={ops}",
        ]
        browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not server.done.wait(timeout):
                raise SystemExit(f"the benchmark page did not finish within {timeout:g} s")
        finally:
            browser.terminate()
            browser.wait(10)
            server.shutdown()
            server.server_close()
        assert server.results is not None
        if "error" in server.results:
            raise SystemExit(f"the benchmark page failed: {server.results['error']}")
        return server.results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50 and p99 in microseconds, and operations per second."""
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return p50, p99, len(samples) / (sum(samples) / 1e6)


def report(results: dict[str, Any]) -> list[float]:
    """Print the rows (as ``benchmarks/store.py`` prints the server's); the p50 ratios."""
    agent = results["userAgent"].split()
    version = next((p.split("/")[1] for p in agent if "Chrome/" in p), "?")
    isolated = "5 us timers" if results["isolated"] else "100 us timers: not isolated"
    print(f"browser store, plain headless Chromium {version} ({isolated}), in the runtime worker")
    print(f"  {'backend':34} {'operation':10} {'p50':>9} {'p99':>9} {'ops/s':>10}   ratio")
    ratios = []
    for op in OPERATIONS:
        raw = percentiles(results[op]["raw"])
        valor = percentiles(results[op]["valor"])
        awaited = percentiles(results[op]["python"])
        ratios.append(valor[0] / raw[0])
        rows = [
            ("indexeddb (valor store)", valor, f"{valor[0] / raw[0]:6.2f}"),
            ("indexeddb (plain javascript)", raw, ""),
            ("  the same, awaited from python", awaited, f"{awaited[0] / raw[0]:6.2f}"),
        ]
        if "committed" in results[op]:
            committed = percentiles(results[op]["committed"])
            rows.append(
                (
                    "  the same, committed early",
                    committed,
                    f"{valor[0] / committed[0]:6.2f} (valor's over it)",
                )
            )
        if "floor" in results[op]:
            floor = percentiles(results[op]["floor"])
            rows.append(("  the same, least python can do", floor, f"{floor[0] / raw[0]:6.2f}"))
        for name, figures, ratio in rows:
            p50, p99, rate = figures
            print(f"  {name:34} {op:10} {p50:9.1f} {p99:9.1f} {rate:10.0f}   {ratio}")
    worst = max(ratios)
    verdict = "ok" if worst <= 1.5 else "over the target"
    print(f"  target: each p50 at most 1.5x plain IndexedDB's: worst {worst:.2f} ({verdict})")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="calls of each operation per side")
    args = parser.parse_args()
    report(measure(args.ops))


if __name__ == "__main__":
    main()
