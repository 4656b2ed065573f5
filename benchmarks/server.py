"""Server throughput: Valor against bare Starlette and bare FastAPI, on both of uvicorn's stacks.

Every target runs under the same uvicorn settings (log level warning, no access log), once on
h11 + asyncio and once on httptools + uvloop (uvicorn[standard]'s stack, and ``valor serve``'s
default); Valor's targets run the protocols ``valor serve`` runs (uvicorn's, with the head
limits of ``valor.connections``). The targets: the hello plug-in through Valor against a bare
Starlette app, and the FastAPI example (``plugins/shop.py``) bare against the same app as an
``asgi`` plug-in (``valor:fastapi``). wrk loads them over keep-alive connections on 127.0.0.1,
the server pinned to one core and wrk to another (``--workers 2``: two uvicorn workers, not
pinned). Each round loads every target once, in turn, and gives one ratio per pair; the median
over the rounds is the figure (a shared machine's speed drifts by 10% or more within seconds,
which runs seconds apart mostly cancel). Prints requests per second, median latency, the load
average and the ratios against the issue's targets.

    bash scripts/install-bench.sh   # wrk, valgrind
    python benchmarks/server.py [--seconds 2] [--rounds 12] [--connections 32] [--workers 2]
        [--stacks h11 httptools] [--targets ...] [--kinds]
    python benchmarks/server.py --fastapi [--stream]
    python benchmarks/server.py --instructions [--requests 1000] [--fastapi] [--stacks ...]

``--targets`` picks others, as ``starlette+access-log`` and ``valor+access-log``: one access line
per request (uvicorn's for Starlette, Valor's own for Valor), to /dev/null.
``--fastapi`` adds ``valor:fastapi-wire``, the same plug-in answered through the wire message,
as the browser host answers it (``VALOR_PASSTHROUGH=0``): what the server's pass-through saves.
``--stream`` measures a 50 MB streamed download (``plugins/download.py``) in MB/s.

``--kinds`` adds the same hello answer from the js, wasm, wasi and native examples, so the
cost of each kind is visible beside Python's (``benchmarks/kinds.py`` has per-kind latency in
both hosts).

``--instructions`` counts instead of timing: each server runs under valgrind's callgrind and
answers sequential requests on one keep-alive connection; the instructions it executes per
request (the difference between two runs of different lengths, so start-up cancels out) are
the same from run to run on any machine, unlike requests per second. The throughput ratio of
a CPU-bound server is the inverse ratio of its instructions per request.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from valor.logs import logging_config
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

# Valor's loggers have no handler of their own: its access lines need a logging configuration.
LOG_CONFIG = Path(tempfile.mkdtemp(prefix="valor-bench-")) / "logging.json"
LOG_CONFIG.write_text(json.dumps(logging_config("info")))

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
        [
            "valor.cli:app_from_environment",
            "--factory",
            "--no-access-log",
            "--log-level",
            "info",
            "--log-config",
            str(LOG_CONFIG),
        ],  # valor serve's: Valor's lines to stderr
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
DEFAULT_TARGETS = ["starlette", "valor", "fastapi", "valor:fastapi"]
# The FastAPI example bare under uvicorn, and the same app as an asgi plug-in.
TARGETS["fastapi"] = (["shop:app", "--app-dir", "plugins", "--no-access-log"], {}, "/")
ASGI_MANIFEST = str(ROOT / "plugins" / "asgi.json")
TARGETS["valor:fastapi"] = (
    TARGETS["valor"][0],
    {**TARGETS["valor"][1], "VALOR_MANIFEST": ASGI_MANIFEST},
    "/shop",
)
# The same through the wire message, as the browser host answers it (no pass-through).
TARGETS["valor:fastapi-wire"] = (
    TARGETS["valor"][0],
    {**TARGETS["valor:fastapi"][1], "VALOR_PASSTHROUGH": "0"},
    "/shop",
)


def start(
    target: str,
    command: list[str] | None = None,
    timeout: float = 10,
    extra_env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start a target's server (``NAME@STACK``) under ``command`` (say valgrind) and wait
    until it answers."""
    name, _, stack = target.partition("@")
    args, env, path = TARGETS[name]
    env = {**env, **(extra_env or {})}
    port = free_port()
    process = subprocess.Popen(
        [
            *(command or (SERVER_CPU if WORKERS == 1 else [])),
            *UVICORN,
            "--port",
            str(port),
            *stack_options(name, stack or "httptools"),
            *args,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}{path}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=timeout).read()
            return process, url
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit(f"{target} did not start within {timeout:g} s")


STACKS = {"h11": ("h11", "asyncio"), "httptools": ("httptools", "uvloop")}
"""uvicorn's pure-Python stack, and the one ``uvicorn[standard]`` and ``valor serve`` run on."""
WORKERS = 1  # --workers: with more than one, the server is not pinned to a core


def stack_options(name: str, stack: str) -> list[str]:
    """uvicorn options for a stack; Valor's targets get the protocols ``valor serve`` runs
    (uvicorn's, with the head limits of ``valor.connections``)."""
    http, loop = STACKS[stack]
    if name.startswith("valor"):
        http = {
            "h11": "valor.connections:GuardedH11Protocol",
            "httptools": "valor.connections:GuardedHttpToolsProtocol",
        }[http]
    return ["--http", http, "--loop", loop, "--workers", str(WORKERS)]


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


WARM_UP = 200  # requests in the shorter of the two runs: imports and first calls are done


def instructions(target: str, requests: int) -> float:
    """Instructions the target's server executes per request, counted by callgrind."""
    counts = [callgrind_total(target, n) for n in (WARM_UP, WARM_UP + requests)]
    return (counts[1] - counts[0]) / requests


def callgrind_total(target: str, requests: int) -> int:
    with tempfile.TemporaryDirectory() as folder:
        # One file per process: the plug-in kinds' helper processes forked from the server
        # would otherwise write over its counts.
        valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={folder}/out.%p"]
        # The same string hashes, so the same work, in every run.
        process, url = start(target, valgrind, timeout=600, extra_env={"PYTHONHASHSEED": "0"})
        try:
            parts = urllib.parse.urlsplit(url)
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
            for _ in range(requests):
                connection.request("GET", parts.path)
                connection.getresponse().read()
            connection.close()
            # A dump on request, then a kill: callgrind 3.19 can abort on a signal that lands
            # in a process with threads, such as the server's shutdown on SIGINT.
            subprocess.run(
                ["callgrind_control", "--dump", str(process.pid)],
                check=True,
                timeout=600,
                capture_output=True,
            )
        finally:
            process.kill()
            process.wait()
        counts = (Path(folder) / f"out.{process.pid}.1").read_text()
        summary = re.search(r"^summary: (\d+)", counts, re.MULTILINE)
        return int(summary.group(1))


PAIRS = (
    ("valor", "starlette"),
    ("valor+access-log", "starlette+access-log"),
    ("valor:fastapi", "fastapi"),
    ("valor:fastapi-wire", "fastapi"),
)
TARGET_RATIOS = {  # the targets, per stack
    ("valor", "httptools"): 0.90,
    ("valor", "h11"): 0.95,
    ("valor:fastapi", "httptools"): 0.90,
    ("valor:fastapi", "h11"): 0.90,
}


def main() -> None:
    global WORKERS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--targets", nargs="*", default=DEFAULT_TARGETS, choices=list(TARGETS))
    parser.add_argument(
        "--stacks", nargs="*", default=list(STACKS), choices=list(STACKS), help="default: both"
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server")
    parser.add_argument(
        "--kinds", action="store_true", help="also each other kind's hello (valor:js, ...)"
    )
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions per request (valgrind)"
    )
    parser.add_argument("--requests", type=int, default=1000, help="with --instructions")
    parser.add_argument("--fastapi", action="store_true", help="FastAPI, bare and as a plug-in")
    parser.add_argument("--stream", action="store_true", help="a 50 MB stream's MB/s")
    args = parser.parse_args()
    WORKERS = args.workers
    if args.instructions:
        for stack in args.stacks:
            if args.fastapi:
                count_instructions(args.requests, stack, "fastapi", "valor:fastapi")
            else:
                count_instructions(args.requests, stack, "starlette", "valor")
        return
    if args.stream:
        stream_throughput(args.rounds)
    if args.fastapi:
        # Beside the plain Python hello; -wire: without the pass-through, for comparison.
        args.targets = ["valor", "starlette", "fastapi", "valor:fastapi", "valor:fastapi-wire"]
    elif args.stream:
        return
    if args.kinds:
        args.targets += [f"valor:{kind}" for kind in KIND_PATHS]
    if shutil.which("wrk") is None:
        raise SystemExit("benchmarks/server.py needs wrk: bash scripts/install-bench.sh")
    targets = [f"{name}@{stack}" for stack in args.stacks for name in args.targets]

    # Every server stays up for the whole run (an idle one costs nothing), so rounds are short
    # and a pair of runs is seconds apart; the order flips each round to cancel drift.
    servers = {}
    try:
        for name in targets:
            servers[name] = start(name)
            wrk(servers[name][1], 1, args.connections)  # warm-up
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for round_number in range(args.rounds):
            order = targets if round_number % 2 == 0 else targets[::-1]
            for name in order:
                results[name].append(wrk(servers[name][1], args.seconds, args.connections))
            print(f"round {round_number + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait()

    load = ", ".join(f"{figure:.2f}" for figure in os.getloadavg())
    print(f"workers {WORKERS}, load average {load}")
    print(f"{'target':<32} {'req/s':>10} {'p50 ms':>8}")
    for name, runs in results.items():
        rps = statistics.median(r for r, _ in runs)
        p50 = statistics.median(p for _, p in runs)
        print(f"{name:<32} {rps:>10.0f} {p50:>8.2f}")
    pairs = [
        (f"{name}@{stack}", f"{baseline}@{stack}", TARGET_RATIOS.get((name, stack)))
        for stack in args.stacks
        for name, baseline in PAIRS
    ]
    # What a user of valor serve gets against a Starlette user of uvicorn[standard].
    pairs.append(("valor@h11", "starlette@httptools", None))
    for name, baseline, target in pairs:
        if name in results and baseline in results:
            ratios = [
                a / b for (a, _), (b, _) in zip(results[name], results[baseline], strict=True)
            ]
            wanted = f"  (target >= {target:.2f})" if target else ""
            print(
                f"ratio {name} / {baseline}: {statistics.median(ratios):.3f} median of "
                f"{len(ratios)} rounds ({min(ratios):.3f} to {max(ratios):.3f}){wanted}"
            )


def stream_throughput(rounds: int, megabytes: int = 50) -> None:
    """MB/s of a streamed download through Valor, read by a client on one connection."""
    process, url = start("valor")
    try:
        parts = urllib.parse.urlsplit(url)
        speeds = []
        for _ in range(max(3, rounds // 2)):
            connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
            started = time.perf_counter()
            connection.request("GET", f"/download?mb={megabytes}")
            response = connection.getresponse()
            size = 0
            while chunk := response.read(1 << 20):
                size += len(chunk)
            elapsed = time.perf_counter() - started
            connection.close()
            assert size == megabytes << 20, size
            speeds.append(megabytes / elapsed)
    finally:
        process.terminate()
        process.wait()
    print(
        f"stream {megabytes} MB through valor: {statistics.median(speeds):.0f} MB/s median of "
        f"{len(speeds)} ({min(speeds):.0f} to {max(speeds):.0f})"
    )


def count_instructions(requests: int, stack: str, baseline: str, *names: str) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind: bash scripts/install-bench.sh")
    counts = {}
    for name in (baseline, *names):
        target = f"{name}@{stack}"
        counts[name] = instructions(target, requests)
        print(f"{target:<32} {counts[name]:>10,.0f} instructions per request", flush=True)
    for name in names:
        ratio = counts[baseline] / counts[name]
        wanted = TARGET_RATIOS.get((name, stack))
        print(
            f"throughput ratio {name} / {baseline} on {stack} from instructions: {ratio:.3f}"
            + (f"  (target >= {wanted:.2f})" if wanted else "")
        )


if __name__ == "__main__":
    main()
