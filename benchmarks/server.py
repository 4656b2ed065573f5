"""Server throughput: the hello plug-in through Valor against a bare Starlette app.

Both run under the same uvicorn settings (one worker, log level warning, no access log), loaded
by wrk over keep-alive connections on 127.0.0.1, alternating rounds in one run. A second pair
writes one access line per request (uvicorn's for Starlette, Valor's own for Valor), to
/dev/null. Prints requests per second, median latency and the ratios (target: >= 0.95).

    python benchmarks/server.py [--seconds 5] [--rounds 3] [--connections 32] [--kinds]

``--kinds`` adds the same hello answer from the js, wasm, wasi and native examples, so the
cost of each kind is visible beside Python's (``benchmarks/kinds.py`` has per-kind latency in
both hosts).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from valor.processes import free_port

ROOT = Path(__file__).resolve().parent.parent
UVICORN = [sys.executable, "-m", "uvicorn", "--log-level", "warning"]

# The server on one core and wrk on another, so neither steals the other's time slices (and runs
# are comparable); on a single core machine both share it.
PINNED = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
SERVER_CPU = ["taskset", "-c", "0"] if PINNED else []
LOAD_CPU = ["taskset", "-c", "1"] if PINNED else []

# The example manifest by default; BENCH_MANIFEST picks another (say, only hello).
MANIFEST = os.environ.get("BENCH_MANIFEST", str(ROOT / "plugins" / "plugins.json"))

TARGETS: dict[str, tuple[list[str], dict[str, str], str]] = {
    "starlette": (["benchmarks.baseline_app:app", "--no-access-log"], {}, "/hello"),
    # uvicorn's own access log, for comparison with Valor's (uvicorn's is off for Valor).
    "starlette+access-log": (
        ["benchmarks.baseline_app:app", "--access-log", "--log-level", "info"],
        {},
        "/hello",
    ),
    "valor": (
        ["valor.cli:app_from_environment", "--factory", "--no-access-log"],
        {"VALOR_MANIFEST": MANIFEST, "VALOR_LOG_LEVEL": "warning"},
        "/hello",
    ),
    "valor+access-log": (
        ["valor.cli:app_from_environment", "--factory", "--no-access-log", "--log-level", "info"],
        {"VALOR_MANIFEST": MANIFEST, "VALOR_LOG_LEVEL": "info"},
        "/hello",
    ),
}
# The same hello answer from each other kind mounted by the example manifest, through Valor.
KIND_PATHS = {
    "js": "/hello-js",
    "wasm": "/hello-wasm",
    "wasi": "/hello-wasi",
    "native": "/hello-native",
}
for kind, kind_path in KIND_PATHS.items():
    TARGETS[f"valor:{kind}"] = (TARGETS["valor"][0], TARGETS["valor"][1], kind_path)
DEFAULT_TARGETS = ["starlette", "starlette+access-log", "valor", "valor+access-log"]


def start(target: str) -> tuple[subprocess.Popen[bytes], str]:
    args, env, path = TARGETS[target]
    port = free_port()
    process = subprocess.Popen(
        [*SERVER_CPU, *UVICORN, "--port", str(port), *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}{path}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{target} did not start")


def wrk(url: str, seconds: float, connections: int) -> tuple[float, float]:
    out = subprocess.run(
        [
            *LOAD_CPU,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]
    return rps, float(p50.group(1)) * scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--targets", nargs="*", default=DEFAULT_TARGETS, choices=list(TARGETS))
    parser.add_argument(
        "--kinds", action="store_true", help="also each other kind's hello (valor:js, ...)"
    )
    args = parser.parse_args()
    if args.kinds:
        args.targets += [f"valor:{kind}" for kind in KIND_PATHS]
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/server.py needs wrk: apt-get install wrk")

    results: dict[str, list[tuple[float, float]]] = {name: [] for name in args.targets}
    for round_number in range(args.rounds):
        for name in args.targets:
            process, url = start(name)
            try:
                wrk(url, 1, args.connections)  # warm-up
                results[name].append(wrk(url, args.seconds, args.connections))
            finally:
                process.terminate()
                process.wait()
        print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)

    print(f"{'target':<22} {'req/s':>10} {'p50 ms':>8}")
    medians = {}
    for name, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        p50 = statistics.median(p for _, p in runs)
        medians[name] = rps
        print(f"{name:<22} {rps:>10.0f} {p50:>8.2f}")
    for name, baseline in (("valor", "starlette"), ("valor+access-log", "starlette+access-log")):
        if name in medians and baseline in medians:
            ratio = medians[name] / medians[baseline]
            print(f"ratio {name} / {baseline}: {ratio:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
