"""Browser start-up, latency and throughput: Valor's service worker + Pyodide runtime against a
service worker that answers in JavaScript (the floor) and against Mock Service Worker (npm
``msw``, pinned in package.json: the peer people would pick), in plain headless Chromium. A
fourth side, the port floor, takes Valor's path to a module worker over the tab's MessagePort
but answers there in JavaScript: Valor's time over it is what Python costs.

Start-up, ``--runs`` times, each in a new browser profile: the first answer (from navigation)
on a first visit, on a repeat visit, on a repeat visit with the static host stopped (offline,
from the service worker's cache), and on a first visit of a bundle built with ``--fallback``
(a real ``valor serve --cors`` answers while the runtime boots); Valor's boot steps; and the
bytes a first visit transfers beyond Pyodide's core, gzipped as a static host would serve them.
Then, in one more profile: p50/p90/p99 of sequential hello requests, throughput of concurrent
requests and a 5 MB echo for each side, best of ``--rounds``.
Targets: repeat visit <= 0.6 s, first visit <= 2.0 s, fallback first answer within 50 ms of
``Valor.start()`` resolving, offline as fast as a repeat visit; p50 ratio <= 1.15, 5 MB <= 1.2.

Plain Chromium, not Playwright (which slows service-worker traffic). The pages post their
figures to this script's results server, on another port than the sites' static host. For
Valor the suite also reads a 50 MB streamed download as it arrives (MB/s).

    python benchmarks/browser.py [--runs 5] [--requests 500] [--concurrent 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "runtime_py"))

from valor import build as build_module  # noqa: E402
from valor.build import PYODIDE_FILES, build  # noqa: E402
from valor.processes import free_port, stop_process  # noqa: E402
from valor.static import MIME_TYPES  # noqa: E402
from valor.testing.hosts import CHROMIUM_ARGS as HEADLESS_ARGS  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
# Plain headless Chromium, kept off the closed network; extensions only add noise.
CHROMIUM_ARGS = ["--headless", *HEADLESS_ARGS, "--disable-extensions"]
# The floor answers in the service worker; the port floor takes Valor's path (service worker ->
# a tab's MessagePort -> module worker -> back) but answers in JavaScript: what is left of
# Valor's time over it is Python's.
FLOORS = {"floor": ["floor-sw.js"], "port": ["port-sw.js", "port-worker.js"]}
MSW = ROOT / "node_modules" / "msw"
MSW_FILES = {"msw.js": "lib/iife/index.js", "mockServiceWorker.js": "lib/mockServiceWorker.js"}
MANIFEST = ROOT / "plugins" / "plugins.json"
# bench.html and bench.js; floor-sw.js (the floor); port-sw.js and port-worker.js (transport)
PAGES = Path(__file__).resolve().parent / "browser_pages"
BENCH_PAGES = ("bench.html", "bench.js")
VISITS = ("first", "repeat", "offline", "fallback")
NOSNAP = (("nosnap", "first"), ("nosnap", "repeat"))  # the baseline: built with --no-snapshot


class SiteServer(http.server.ThreadingHTTPServer):
    """The static host of every site (``/valor/``, ``/fallback/``, ``/msw/``, the floors)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, folders: dict[str, Path], port: int) -> None:
        super().__init__(("127.0.0.1", port), SiteHandler)
        self.folders = folders


class SiteHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = MIME_TYPES  # type: ignore[assignment]
    server: SiteServer

    def translate_path(self, path: str) -> str:
        clean = path.split("?", 1)[0]
        name, _, rest = clean.lstrip("/").partition("/")
        folder = self.server.folders.get(name)
        if folder is None:
            return "/nonexistent"
        return str(folder / rest) if rest else str(folder / "index.html")

    def end_headers(self) -> None:
        # Cross-origin isolation gives the pages 5 us timers instead of 100 us ones.
        self.send_header("cross-origin-opener-policy", "same-origin")
        self.send_header("cross-origin-embedder-policy", "require-corp")
        self.send_header("cache-control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Sites:
    """The static host, which a plan can stop (offline visits) and start again on its port."""

    def __init__(self, folders: dict[str, Path]) -> None:
        self.folders = folders
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.server: SiteServer | None = None

    def up(self) -> None:
        if self.server is None:
            self.server = SiteServer(self.folders, self.port)
            threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class ResultsServer(http.server.ThreadingHTTPServer):
    """Takes each page's figures and answers with the next page of the plan: ``(url, host)``,
    where ``host`` says whether the static host must be up or down for it."""

    daemon_threads = True

    def __init__(self, sites: Sites) -> None:
        super().__init__(("127.0.0.1", 0), ResultsHandler)
        self.sites = sites
        self.plan: list[tuple[str, str]] = []
        self.results: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.url = f"http://127.0.0.1:{self.server_port}/results"


class ResultsHandler(http.server.BaseHTTPRequestHandler):
    server: ResultsServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.results.append(json.loads(body))
        plan = self.server.plan
        url, host = plan.pop(0) if plan else (None, "up")
        self.server.sites.up() if host == "up" else self.server.sites.down()
        answer = json.dumps({"next": url}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.send_header("access-control-allow-origin", "*")
        self.end_headers()
        self.wfile.write(answer)
        if url is None:
            self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def prepare(work: Path, fallback: str) -> dict[str, Path]:
    """Build the bundles (the benchmark pages shipped in them, so they load offline too) and
    lay out the other sites."""
    folders = {"valor": work / "valor", "fallback": work / "fallback", "nosnap": work / "nosnap"}
    site_folders = build_module.SITE_FOLDERS
    build_module.SITE_FOLDERS = (*site_folders, PAGES.relative_to(ROOT).as_posix())
    try:
        build(MANIFEST, folders["valor"], base="/valor/", quiet=True)
        build(MANIFEST, folders["fallback"], base="/fallback/", fallback=fallback, quiet=True)
        build(MANIFEST, folders["nosnap"], base="/nosnap/", snapshot=False, quiet=True)
    finally:
        build_module.SITE_FOLDERS = site_folders
    sides = {**FLOORS, "msw": []}
    for target, files in sides.items():
        folders[target] = work / target
        folders[target].mkdir()
        for name in [*files, *BENCH_PAGES]:
            shutil.copy(PAGES / name, folders[target])
    if not (MSW / "package.json").exists():
        raise SystemExit("msw is not installed: run npm ci (it is pinned in package.json)")
    for name, source in MSW_FILES.items():
        shutil.copy(MSW / source, folders["msw"] / name)
    return folders


def drive(sites: Sites, first: str, plan: list[tuple[str, str]], profile: Path, timeout: float):
    """One Chromium process, a new profile, through ``plan``; returns the pages' figures."""
    results = ResultsServer(sites)
    results.plan = [(url + f"&results={quote(results.url)}", host) for url, host in plan]
    threading.Thread(target=results.serve_forever, daemon=True).start()
    sites.up()
    command = [
        CHROMIUM,
        *CHROMIUM_ARGS,
        f"--user-data-dir={profile}",
        first + "&results=" + quote(results.url),
    ]
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not results.done.wait(timeout):
            # Kept, so one stuck page does not throw away the figures of a long run.
            step = plan[len(results.results) - 1][0] if results.results else first
            results.results.append({"target": "-", "phase": "-", "error": f"stuck at {step}"})
    finally:
        browser.terminate()
        browser.wait(10)
        results.shutdown()
        results.server_close()
        sites.up()
    return results.results


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="valor-bench-"))
    server = None
    try:
        server_port = free_port()
        fallback = f"http://127.0.0.1:{server_port}/"
        sites = Sites(prepare(work, fallback))
        server = subprocess.Popen(
            [sys.executable, "-m", "valor.cli", "serve", str(MANIFEST), "--port", str(server_port),
             "--cors", sites.origin, "--log-level", "warning"],
            env={**os.environ, "PYTHONPATH": str(ROOT / "runtime_py")},
        )  # fmt: skip
        config = quote(json.dumps({"requests": args.requests, "concurrent": args.concurrent}))

        def page(target: str, phase: str) -> str:
            return f"{sites.origin}/{target}/bench.html?phase={phase}&config={config}"

        startup: list[dict[str, Any]] = []
        for n in range(args.runs):
            plan = [
                (page("valor", "first"), "up"),
                (page("valor", "repeat"), "up"),
                (page("valor", "offline"), "down"),
                (page("fallback", "fallback"), "up"),
                (page("nosnap", "first"), "up"),
                (page("nosnap", "repeat"), "up"),
            ]
            startup += drive(sites, page("msw", "first"), plan, work / f"profile-{n}", args.timeout)
        plan = []
        for _ in range(args.rounds):
            plan += [(page(t, "suite"), "up") for t in ("floor", "port", "msw", "valor")]
        suite = drive(sites, page("floor", "first"), plan, work / "profile-suite", args.timeout)
        return {"startup": startup, "suite": suite, "transfer": transfer(sites.folders["valor"])}
    finally:
        if server is not None:
            stop_process(server)
        shutil.rmtree(work, ignore_errors=True)


def transfer(folder: Path) -> dict[str, int]:
    """Gzipped bytes of the bundle beyond Pyodide's core (and the benchmark's own pages)."""
    info = json.loads((folder / "valor-bundle.json").read_text())
    skipped = {f"pyodide/{name}" for name in PYODIDE_FILES} | set(BENCH_PAGES)
    sizes = {"snapshot": 0, "wheels": 0, "site": 0}
    for asset in info["assets"]:
        if asset in skipped or asset in FLOORS["floor"] + FLOORS["port"]:
            continue
        packed = len(gzip.compress((folder / asset).read_bytes(), compresslevel=6))
        part = "snapshot" if asset == "snapshot.bin" else asset.split("/")[0]
        sizes[part if part in sizes else "site"] += packed
    return sizes


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):7.0f} [{min(values):.0f}-{max(values):.0f}]"


def report(figures: dict[str, Any]) -> None:
    results = figures["startup"] + figures["suite"]
    for failed in (r for r in results if "error" in r):
        print(f"error: {failed['target']} {failed['phase']}: {failed['error']}")
    startup = [r for r in figures["startup"] if "error" not in r]

    def visits(phase: str, key: str = "firstResponseMs", target: str = "") -> list[float]:
        """The figures of ``phase`` visits to ``target`` (Valor's bundles when not given)."""
        valor = {"valor", "fallback"}
        return [
            r[key]
            for r in startup
            if r["phase"] == phase and (r["target"] == target if target else r["target"] in valor)
        ]

    started = visits("fallback", "startMs")
    answered = visits("fallback")
    gaps = [a - s for s, a in zip(started, answered, strict=True)]
    hosts = "/".join(sorted({r["host"] for r in startup if r["phase"] == "fallback"}))
    rows = [
        ("Valor first answer, first visit", visits("first")),
        ("Valor first answer, repeat visit", visits("repeat")),
        ("Valor first answer, offline repeat visit", visits("offline")),
        ("with --fallback: Valor.start() resolved", started),
        (f"with --fallback: first answer ({hosts})", answered),
        ("with --fallback: answer after start()", gaps),
        ("MSW first answer, first visit", visits("first", target="msw")),
        # The baseline, in the same runs: the same bundle built with --no-snapshot.
        ("--no-snapshot: first answer, first visit", visits("first", target="nosnap")),
        ("--no-snapshot: first answer, repeat visit", visits("repeat", target="nosnap")),
    ]
    runs = len(visits("first"))
    print(f"Start-up, {runs} runs (a new browser profile each), ms from navigation: median [range]")
    for label, values in rows:
        print(f"  {label:44}{spread(values)}")
    # The runtime answers once booted ("ready"); its plug-ins finish loading after that.
    print("Valor boot steps (ms, median; plug-ins load from ready on):")
    names = ["bundle", "files", "pyodide"]
    header = [*names, "ready", "plugins"]
    print(f"  {'':24}" + "".join(f"{n:>10}" for n in header) + f"{'snapshot':>10}")
    for target, phase in [*(("valor", p) for p in VISITS), *NOSNAP]:
        rows_of = [r for r in startup if r["phase"] == phase and r["target"] == target]
        if phase == "fallback":
            rows_of = [r for r in startup if r["target"] == "fallback"]
        if not rows_of:
            continue
        label = phase if target == "valor" else f"{phase} (no snapshot)"
        cells = [statistics.median(r["steps"].get(n, 0) for r in rows_of) for n in names]
        cells.append(statistics.median(r["bootMs"] for r in rows_of))
        cells.append(statistics.median(r["steps"].get("plugins", 0) for r in rows_of))
        booted = sum(bool(r["snapshot"]) for r in rows_of)
        line = "".join(f"{c:10.0f}" for c in cells)
        print(f"  {label:24}{line}{booted:>7}/{len(rows_of)}")
    sizes = figures["transfer"]
    total = sum(sizes.values())
    parts = ", ".join(f"{name} {size / 1e6:.2f} MB" for name, size in sizes.items())
    print(f"First visit beyond Pyodide's core, gzip: {total / 1e6:.2f} MB ({parts})")
    print()

    suites = figures["suite"]
    # A round that failed or got stuck is printed above; the best of the others is kept.
    finished = [r for r in suites if r["phase"] == "suite" and "error" not in r]
    if any(not any(r["target"] == t for r in finished) for t in ("floor", "port", "msw", "valor")):
        raise SystemExit("the latency suite did not finish on every side: no table")

    def best(target: str) -> dict[str, float]:
        rounds = [r for r in finished if r["target"] == target]
        # The best round of each side: the least disturbed by the rest of the machine.
        return {
            key: (max if key == "rps" else min)(s[key] for s in rounds)
            for key in ("p50", "p90", "p99", "rps", "echo5mb")
        }

    floor, port, msw, valor = best("floor"), best("port"), best("msw"), best("valor")
    print(
        f"{'':24}{'JS floor':>10}{'port floor':>12}{'MSW':>10}{'Valor':>10}"
        f"{'Valor/floor':>13}{'Valor/MSW':>11}"
    )
    rows = [(f"hello {key} (ms)", key, ".3f") for key in ("p50", "p90", "p99")]
    rows += [("200 concurrent (req/s)", "rps", ".0f"), ("5 MB echo (ms)", "echo5mb", ".1f")]
    for label, key, form in rows:
        print(
            f"{label:24}{floor[key]:10{form}}{port[key]:12{form}}{msw[key]:10{form}}"
            f"{valor[key]:10{form}}{valor[key] / floor[key]:13.2f}{valor[key] / msw[key]:11.2f}"
        )
    repeat, first = statistics.median(visits("repeat")), statistics.median(visits("first"))
    old_repeat = statistics.median(visits("repeat", target="nosnap"))
    old_first = statistics.median(visits("first", target="nosnap"))
    offline, gap = statistics.median(visits("offline")), statistics.median(gaps)
    suites = [r for r in results if r["target"] == "valor" and r["phase"] == "suite"]
    stream = max(s["streamMBps"] for s in suites)
    print(f"{'50 MB stream (MB/s)':24}{'':32}{stream:10.0f}")
    p50_ratio, echo_ratio = valor["p50"] / floor["p50"], valor["echo5mb"] / floor["echo5mb"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "missed"

    print(
        f"targets: repeat visit {repeat / 1000:.2f} s (<= 0.6: {verdict(repeat <= 600)}), "
        f"first visit {first / 1000:.2f} s (<= 2.0: {verdict(first <= 2000)}), "
        f"fallback answer {gap:.0f} ms after start() (<= 50: {verdict(gap <= 50)}), "
        f"offline {offline / repeat:.2f} x repeat; against --no-snapshot in the same runs: "
        f"first visit {first / old_first:.2f} x, repeat {repeat / old_repeat:.2f} x; "
        f"p50 ratio {p50_ratio:.2f} (<= 1.15: {verdict(p50_ratio <= 1.15)}), "
        f"5 MB ratio {echo_ratio:.2f} (<= 1.2: {verdict(echo_ratio <= 1.2)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="start-up runs, a new profile each")
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrent", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="suite rounds per side (best kept)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per browser run")
    parser.add_argument("--json", action="store_true", help="print the raw results as JSON")
    args = parser.parse_args()
    figures = run(args)
    if args.json:
        print(json.dumps(figures, indent=2))
    report(figures)


if __name__ == "__main__":
    main()
