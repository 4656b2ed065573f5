"""Per-kind latency: the same hello answer from each plug-in kind, in both hosts, in one run.

Mounts the hello example of every kind (python, js, wasm, wasi, native, proxy to a bare
uvicorn upstream on 127.0.0.1) at ``/<kind>``, and the Rust hello built to wasm and native at
``/rust-wasm`` and ``/rust-native`` beside the C ones, and measures sequential GETs of it:

- server: ``valor serve`` under uvicorn, one keep-alive connection, p50/p90/p99 in ms, and
  requests per second with 16 connections (wrk, when installed);
- browser: the same manifest bundled by ``valor build`` (native is left out) in plain headless
  Chromium (not Playwright, which slows service-worker traffic); the page posts its figures
  back to this script.

    python benchmarks/kinds.py [--requests 500] [--host server|browser|both]
"""

from __future__ import annotations

import argparse
import http.client
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "runtime_py"))

from valor import toolchain  # noqa: E402
from valor.build import build  # noqa: E402
from valor.processes import free_port  # noqa: E402
from valor.static import MIME_TYPES  # noqa: E402
from valor.testing.hosts import CHROMIUM_ARGS as HEADLESS_ARGS  # noqa: E402

KINDS = ("python", "js", "wasm", "rust-wasm", "wasi", "native", "rust-native", "proxy")
BROWSER_KINDS = ("python", "js", "wasm", "rust-wasm", "wasi", "proxy")
BUILT = ROOT / "plugins" / "build"
EXAMPLES = {  # mount: (type, file)
    "python": ("python", ROOT / "plugins" / "hello.py"),
    "js": ("js", ROOT / "plugins" / "hello.js"),
    "wasm": ("wasm", BUILT / "hello.wasm"),
    "rust-wasm": ("wasm", BUILT / "hello-rust.wasm"),
    "wasi": ("wasi", BUILT / "hello.wasi.wasm"),
    "native": ("native", BUILT / "hello.so"),
    "rust-native": ("native", BUILT / "hello-rust.so"),
}
CHROMIUM = "/usr/bin/chromium"
# Plain headless Chromium, kept off the closed network; extensions only add noise.
CHROMIUM_ARGS = ["--headless", *HEADLESS_ARGS, "--disable-extensions"]


async def upstream(scope: dict, receive: Any, send: Any) -> None:
    """The proxy kind's upstream: answers hello, allowing any site (the browser fetches it
    cross-origin)."""
    if scope["type"] != "http":
        return
    headers = [(b"access-control-allow-origin", b"*")]
    if scope["method"] == "OPTIONS":  # the preflight for the forwarded x-* headers
        headers.append((b"access-control-allow-headers", b"*"))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    headers.append((b"content-type", b"text/plain; charset=utf-8"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"Hello Plugin!"})


def wait_for(port: int, path: str, process: subprocess.Popen[bytes], what: str) -> None:
    for _ in range(400):
        if process.poll() is not None:
            raise SystemExit(f"{what} exited with {process.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", path)
            connection.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def site(folder: Path, upstream_url: str) -> Path:
    """The examples and their manifest in ``folder``."""
    toolchain.build(ROOT / "plugins" / "src")
    plugins = []
    for mount, (kind, path) in EXAMPLES.items():
        shutil.copy(path, folder / path.name)
        plugins.append({"name": mount, "type": kind, "path": path.name})
    plugins.append({"name": "proxy", "type": "proxy", "url": upstream_url})
    manifest = folder / "plugins.json"
    manifest.write_text(json.dumps({"plugins": plugins}, indent=2))
    return manifest


def percentiles(times: list[float]) -> dict[str, float]:
    times = sorted(times)
    pick = lambda p: times[min(len(times) - 1, int(p / 100 * len(times)))]  # noqa: E731
    return {"p50": pick(50), "p90": pick(90), "p99": pick(99)}


def server_figures(manifest: Path, requests: int) -> dict[str, dict[str, float]]:
    port = free_port()
    command = [sys.executable, "-m", "valor.cli", "serve", str(manifest), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    figures: dict[str, dict[str, float]] = {}
    try:
        wait_for(port, "/_health", process, "valor serve")
        connection = http.client.HTTPConnection("127.0.0.1", port)
        for kind in KINDS:
            times = []
            for i in range(50 + requests):
                started = time.perf_counter()
                connection.request("GET", f"/{kind}")
                body = connection.getresponse().read()
                if i >= 50:
                    times.append((time.perf_counter() - started) * 1000)
                if body != b"Hello Plugin!":
                    raise SystemExit(f"{kind}: wrong answer {body[:200]!r}")
            figures[kind] = percentiles(times)
            if shutil.which("wrk"):
                url = f"http://127.0.0.1:{port}/{kind}"
                out = subprocess.run(
                    ["wrk", "-t1", "-c16", "-d3s", url], capture_output=True, text=True
                ).stdout
                found = re.search(r"Requests/sec:\s+([\d.]+)", out)
                figures[kind]["rps"] = float(found.group(1)) if found else float("nan")
    finally:
        process.terminate()
        process.wait(10)
    return figures


BENCH_JS = """
const config = JSON.parse(new URLSearchParams(location.search).get("config"));
async function main() {
  const result = {};
  try {
    const { Valor } = await import("./valor.js");
    await Valor.start();
    for (const kind of config.kinds) {
      const times = [];
      for (let i = 0; i < 50 + config.requests; i++) {
        const t = performance.now();
        const text = await (await fetch(kind)).text();
        if (i >= 50) times.push(performance.now() - t);
        if (text !== "Hello Plugin!") throw new Error(`${kind}: wrong answer ${text.slice(0, 99)}`);
      }
      result[kind] = times;
    }
  } catch (error) {
    result.error = String(error?.stack ?? error);
  }
  await fetch("/results", { method: "POST", body: JSON.stringify(result) });
}
main();
"""


class ResultServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), ResultHandler)
        self.folder = folder
        self.result: dict[str, Any] = {}
        self.done = threading.Event()


class ResultHandler(http.server.SimpleHTTPRequestHandler):
    extensions_map = MIME_TYPES  # type: ignore[assignment]
    server: ResultServer

    def translate_path(self, path: str) -> str:
        return str(self.server.folder / path.split("?", 1)[0].lstrip("/"))

    def do_POST(self) -> None:
        self.server.result = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(204)
        self.end_headers()
        self.server.done.set()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def run_in_chromium(
    dist: Path, bench_js: str, config: dict[str, Any], work: Path, timeout: float
) -> dict[str, Any]:
    """Serves the bundle in ``dist`` with ``bench_js`` as its bench page, opens it in Chromium
    with ``config`` in the query, and returns what the page posts back."""
    (dist / "bench.js").write_text(bench_js)
    page = '<!doctype html><meta charset="utf-8"><script type="module" src="bench.js"></script>'
    (dist / "bench.html").write_text(page)
    server = ResultServer(dist)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/bench.html?config={json.dumps(config)}"
    command = [CHROMIUM, *CHROMIUM_ARGS, f"--user-data-dir={work / 'profile'}", url]
    browser = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not server.done.wait(timeout):
            raise SystemExit("the browser benchmark timed out")
    finally:
        browser.terminate()
        browser.wait(10)
        server.shutdown()
        server.server_close()
    if "error" in server.result:
        raise SystemExit(f"browser: {server.result['error']}")
    return server.result


def start_upstream() -> tuple[subprocess.Popen[bytes], int]:
    """The proxy's upstream (``upstream`` below) under uvicorn on a free port, answering."""
    port = free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--log-level", "warning", "--no-access-log"]
    up = subprocess.Popen(
        [*uvicorn, "benchmarks.kinds:upstream", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'runtime_py'}"},
    )
    wait_for(port, "/", up, "the upstream")
    return up, port


def browser_figures(manifest: Path, requests: int, work: Path) -> dict[str, dict[str, float]]:
    dist = work / "dist"
    build(manifest, dist, quiet=True)
    config = {"kinds": BROWSER_KINDS, "requests": requests}
    result = run_in_chromium(dist, BENCH_JS, config, work, 300)
    return {kind: percentiles(times) for kind, times in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--host", choices=("server", "browser", "both"), default="both")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="valor-kinds-bench-"))
    up, port = start_upstream()
    try:
        (work / "site").mkdir()
        manifest = site(work / "site", f"http://127.0.0.1:{port}")
        results = {}
        if args.host in ("server", "both"):
            results["server"] = server_figures(manifest, args.requests)
        if args.host in ("browser", "both"):
            results["browser"] = browser_figures(manifest, args.requests, work)
    finally:
        up.terminate()
        up.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print(f"hello, {args.requests} sequential requests per kind; latency in ms")
    header = f"{'kind':<12}"
    for host in results:
        header += f"{host + ' p50':>14}{'p90':>8}{'p99':>8}"
        if host == "server":
            header += f"{'req/s':>9}"
    print(header)
    for kind in KINDS:
        line = f"{kind:<12}"
        for host, figures in results.items():
            got = figures.get(kind)
            if got is None:
                line += f"{'n/a':>14}{'':>8}{'':>8}" + (f"{'':>9}" if host == "server" else "")
                continue
            line += f"{got['p50']:>14.2f}{got['p90']:>8.2f}{got['p99']:>8.2f}"
            if host == "server":
                line += f"{got.get('rps', float('nan')):>9.0f}"
        print(line)
    if "server" in results:
        base = results["server"]["python"]["p50"]
        costs = ", ".join(
            f"{k} {results['server'][k]['p50'] / base:.1f}x" for k in KINDS if k != "python"
        )
        print(f"server p50 relative to python: {costs}")


if __name__ == "__main__":
    main()
