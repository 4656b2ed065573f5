"""Soak test: wrk against every plug-in kind of a real ``valor serve``, for a bounded time.

For each kind in turn (python, python with ``"isolation": "process"``, js, wasm, wasi, native,
proxy) it loads one URL with wrk, then prints the requests answered, the errors (non-2xx
answers and socket errors), the 99th-percentile latency, and the resident memory of the
server and of its helper processes before and after. Memory that keeps rising from one run to
the next is a leak; errors must be 0. Not part of the test suite: it takes minutes.

    python benchmarks/soak.py [--seconds 60] [--rounds 1] [--connections 16] [--kinds js,wasm]

Needs wrk (``apt-get install wrk``) and the examples built (``bash scripts/install-toolchains.sh``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from valor.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "plugins"

KINDS = {
    "python": ({"type": "python", "path": str(PLUGINS / "hello.py")}, "/python"),
    "python-process": (
        {"type": "python", "path": str(PLUGINS / "hello.py"), "isolation": "process"},
        "/python-process",
    ),
    "js": ({"type": "js", "path": str(PLUGINS / "hello.js")}, "/js"),
    "wasm": ({"type": "wasm", "path": str(PLUGINS / "build" / "hello.wasm")}, "/wasm"),
    "wasi": ({"type": "wasi", "path": str(PLUGINS / "build" / "hello.wasi.wasm")}, "/wasi"),
    "native": ({"type": "native", "path": str(PLUGINS / "build" / "hello.so")}, "/native"),
    "proxy": ({"type": "proxy", "url": "http://127.0.0.1:{port}/python"}, "/proxy/"),
}


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants, in MiB."""
    total, pids = 0, [pid]
    while pids:
        current = pids.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, AttributeError):
            continue
        pids.extend(int(child) for child in children)
    return total / 1024


def run_wrk(url: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests": requests,
        "errors": (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(int(n) for n in sockets.groups()) if sockets else 0),
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("soak: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    kinds = args.kinds.split(",")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        plugins = []
        for kind in kinds:
            entry = json.loads(json.dumps(KINDS[kind][0]).replace("{port}", str(port)))
            plugins.append({"name": kind, **entry})
        if "proxy" in kinds and "python" not in kinds:
            plugins.append({"name": "python", **KINDS["python"][0]})
        manifest = Path(folder) / "plugins.json"
        manifest.write_text(json.dumps({"plugins": plugins}))
        log = open(Path(folder) / "server.log", "w")  # noqa: SIM115 (open for the run)
        server = subprocess.Popen(
            [sys.executable, "-m", "valor.cli", "serve", str(manifest), "--port", str(port),
             "--log-level", "warning", "--strict"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(base + "/_health", timeout=1)
                    break
                except httpx.TransportError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        print(Path(folder, "server.log").read_text(), file=sys.stderr)
                        return 1
                    time.sleep(0.1)
            for kind in kinds:  # warm up every helper, so "before" counts them
                httpx.get(base + KINDS[kind][1], timeout=30)
            print(f"{'kind':<16}{'round':>6}{'requests':>10}{'errors':>8}{'p99 ms':>9}"
                  f"{'RSS before':>12}{'RSS after':>11}")  # fmt: skip
            failed = False
            for round_number in range(1, args.rounds + 1):
                for kind in kinds:
                    before = rss_mib(server.pid)
                    result = run_wrk(base + KINDS[kind][1], args.seconds, args.connections)
                    after = rss_mib(server.pid)
                    failed |= result["errors"] > 0 or server.poll() is not None
                    print(
                        f"{kind:<16}{round_number:>6}{result['requests']:>10}"
                        f"{result['errors']:>8}{result['p99_ms']:>9.2f}"
                        f"{before:>10.0f}Mi{after:>9.0f}Mi",
                        flush=True,
                    )
            return 1 if failed else 0
        finally:
            stop_process(server)
            log.close()


if __name__ == "__main__":
    sys.exit(main())
