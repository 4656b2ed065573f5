"""Soak test: wrk against every plug-in kind of a real ``valor serve``, for a bounded time.

For each kind in turn (python, python with ``"isolation": "process"``, js, wasm, wasi, native,
proxy) it loads one URL with wrk, then prints the requests answered, the errors (non-2xx
answers and socket errors), the 99th-percentile latency, and the resident memory of the
server and of its helper processes before and after. Memory that keeps rising from one run to
the next is a leak; errors must be 0. Not part of the test suite: it takes minutes.

The ``stream`` kind is a streaming load instead: ``--connections`` clients open streams (an
async generator that never awaits, one that awaits, a sync one, and a Starlette
``StreamingResponse``), read a few KiB and leave mid-stream, over and over. After the load it
prints what is left in the server: asyncio tasks and threads against the counts before the
load, generators still open, and the CPU the server burns in the 2 s after it (none should be
left, and the CPU should be near 0).

    python benchmarks/soak.py [--seconds 60] [--rounds 1] [--connections 16] [--kinds js,wasm]
    python benchmarks/soak.py --kinds stream --seconds 20

Needs wrk (``apt-get install wrk``; not for ``stream``) and the examples built (``bash
scripts/install-toolchains.sh``).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
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
    "stream": ({"type": "python", "path": "{folder}/streams.py"}, "/stream/stats"),
}
# Streams that never end, as a CSV export or an event feed would, and what is left of them.
STREAMS = """import asyncio, os, threading, time
from valor import StreamingResponse, vlugin
OPEN = {"count": 0}
def counted(parts):
    async def wrapper():
        OPEN["count"] += 1
        try:
            async for part in parts:
                yield part
        finally:
            OPEN["count"] -= 1
    return wrapper()
async def never_awaits():
    while True:
        yield b"x" * 1024
async def awaits():
    while True:
        yield b"y" * 1024
        await asyncio.sleep(0.001)
def sync_parts():
    OPEN["count"] += 1
    try:
        while True:
            yield b"z" * 1024
    finally:
        OPEN["count"] -= 1
@vlugin
async def on_request(req):
    if req.path == "/stats":
        return {"tasks": len(asyncio.all_tasks()), "threads": threading.active_count(),
                "open": OPEN["count"], "pid": os.getpid()}
    style = req.query_params.get("style", "never")
    if style == "sync":
        return StreamingResponse(sync_parts())
    return StreamingResponse(counted(never_awaits() if style == "never" else awaits()))
"""
BOARD = """from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route
async def parts():
    while True:
        yield b"s" * 1024
async def stream(request):
    return StreamingResponse(parts())
app = Starlette(routes=[Route("/", stream)])
"""
STYLES = ["/stream?style=never", "/stream?style=awaits", "/stream?style=sync", "/board"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / 100  # clock ticks (USER_HZ)


def stream_load(base: str, seconds: int, connections: int) -> dict[str, float]:
    """``connections`` clients opening streams and leaving after a few KiB, for ``seconds``;
    what the server holds after, against before."""
    before = httpx.get(base + "/stream/stats", timeout=10).json()
    counts = {"streams": 0, "errors": 0}
    lock = threading.Lock()
    until = time.monotonic() + seconds

    def client(index: int) -> None:
        with httpx.Client(base_url=base, timeout=10) as http:
            turn = index
            while time.monotonic() < until:
                turn += 1
                try:
                    with http.stream("GET", STYLES[turn % len(STYLES)]) as answer:
                        received = 0
                        for chunk in answer.iter_raw():
                            received += len(chunk)
                            if received >= 1024 * (1 + turn % 64):
                                break
                    ok = answer.status_code == 200
                except httpx.HTTPError:
                    ok = False
                with lock:
                    counts["streams" if ok else "errors"] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # What is left once the clients are gone: generators close within a second or two.
    settle = time.monotonic() + 10
    try:
        while (after := httpx.get(base + "/stream/stats", timeout=10).json())["open"] and (
            time.monotonic() < settle
        ):
            time.sleep(0.2)
    except httpx.HTTPError as exc:
        message = f"soak: the server stopped answering after the stream load ({exc!r})"
        raise SystemExit(message) from None
    cpu = cpu_seconds(after["pid"])
    time.sleep(2)  # a span to measure the CPU over
    idle_cpu = cpu_seconds(after["pid"]) - cpu
    return {
        **counts,
        "open": after["open"],
        "tasks": after["tasks"] - before["tasks"],
        "threads": after["threads"] - before["threads"],
        "idle_cpu": idle_cpu / 2,
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
    kinds = args.kinds.split(",")
    if shutil.which("wrk") is None and kinds != ["stream"]:
        print("soak: needs wrk (apt-get install wrk)", file=sys.stderr)
        return 2
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "streams.py").write_text(STREAMS)
        Path(folder, "board.py").write_text(BOARD)
        plugins = []
        for kind in kinds:
            text = json.dumps(KINDS[kind][0]).replace("{port}", str(port))
            entry = json.loads(text.replace("{folder}", folder))
            plugins.append({"name": kind, **entry})
        if "stream" in kinds:
            plugins.append({"name": "board", "type": "asgi", "path": f"{folder}/board.py"})
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
                    if kind == "stream":
                        left = stream_load(base, args.seconds, args.connections)
                        after = rss_mib(server.pid)
                        failed |= bool(left["errors"] or left["open"] or left["tasks"] > 0)
                        failed |= left["threads"] > 8 or left["idle_cpu"] > 0.1  # 8: a pool
                        print(
                            f"{kind:<16}{round_number:>6}{left['streams']:>10}"
                            f"{left['errors']:>8}{'-':>9}{before:>10.0f}Mi{after:>9.0f}Mi"
                            f"  left: {left['open']} open generators, {left['tasks']:+d} tasks,"
                            f" {left['threads']:+d} threads, CPU {left['idle_cpu']:.0%} of a"
                            " core in the 2 s after",
                            flush=True,
                        )
                        continue
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
