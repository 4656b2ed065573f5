"""The plug-ins' store: each backend's get, set and increment beside its raw engine, and the
notes example's POST throughput with its notes in SQLite against notes kept in memory.

Operations: ``--ops`` sequential calls of each operation per backend (after a warm-up), on
one event loop, latency p50 and p99 in microseconds and operations per second; beside them
the raw engine in the same run on the same settings: Python's ``sqlite3`` on a file with the
store's settings (WAL, synchronous NORMAL), called directly and called as an asyncio program
must call it (on a connection of its own thread, as the store does), and ``redis.asyncio`` on
the same ``redis-server`` with plain GET, SET and INCR (with the client's defaults, and without
its socket timeout, as the store's own client runs). The calls take turns, 50 each, so a busy
machine's drift reaches them alike. Ratios are Valor's p50 over the raw engine's through a
thread (SQLite) or its plain commands without a socket timeout (Redis) (target: at most 1.3).

Notes: ``valor serve --workers 2`` with the notes plug-in, loaded by wrk (POST, 32 keep-alive
connections), in rounds: the notes example on SQLite, on ``memory:``, and the notes as they
were before the store (a dict in ``ctx.state``), all three serving at once, each round
``--seconds`` of load on each in 5 bursts, the servers taking turns; the median ratio of
SQLite to the dict is the figure (target: at least 0.7). Beside it, the servers' CPU time per
request (all their processes, from /proc): on a machine busier than its cores, requests per
second follow the scheduler's share as much as the work. Without wrk, a Python load generator
on loopback takes its place.

Registry: how long after a ``POST /_plugins`` both workers of ``--workers 2`` serve the new
plug-in (each polls the store every 0.5 s).

The browser's store (IndexedDB, from the runtime worker in plain headless Chromium) beside
IndexedDB driven from plain JavaScript in the same run comes last: ``store_browser.py``
(target: at most 1.5).

    python benchmarks/store.py [--ops 2000] [--seconds 5] [--rounds 3] [--skip-notes]
                               [--skip-browser]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.servers import redis_server
from valor.processes import free_port, stop_process
from valor.store import MemoryBackend, Store
from valor.store.backend import Backend
from valor.store.redis import RedisBackend
from valor.store.sqlite import SqliteBackend, connect

ROOT = Path(__file__).resolve().parent.parent
VALUE = {"text": "a note of some forty characters or so", "id": 12345}
BURSTS = 5
"""Bursts of load on each notes server per round, the servers taking turns."""

# The notes plug-in as it was before the store: notes in the process's memory.
DICT_NOTES = """
import secrets
from valor import HTTPError, Response, vlugin

def on_create(ctx):
    ctx.state.notes = {}

@vlugin
async def on_request(ctx, req):
    if req.method == "POST" and req.path in ("", "/"):
        data = req.json()
        text = data.get("text") if isinstance(data, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise HTTPError(400, "a note needs a non-empty string field 'text'")
        note = {"id": 10**11 + secrets.randbelow(9 * 10**11), "text": text.strip()}
        ctx.state.notes[note["id"]] = note
        return Response(note, status_code=201, headers={"location": f"{req.prefix}/{note['id']}"})
    raise HTTPError(405, "only POST here")
"""


def percentiles(samples: list[float]) -> tuple[float, float, float]:
    """p50 and p99 in microseconds, and operations per second."""
    ordered = sorted(samples)
    p50 = ordered[len(ordered) // 2] * 1e6
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e6
    return p50, p99, len(samples) / sum(samples)


async def timed(
    calls: dict[str, Callable[[int], Awaitable[object]]], count: int
) -> dict[str, list[float]]:
    """Each call ``count`` times, in turns of 50 calls each, so that a busy machine's drift
    reaches them all alike; per-call durations in seconds."""
    for call in calls.values():  # warm-up: connections, caches, scripts loaded
        for index in range(100):
            await call(index)
    samples: dict[str, list[float]] = {label: [] for label in calls}
    clock = time.perf_counter
    for start in range(0, count, 50):
        for label, call in calls.items():
            for index in range(start, min(count, start + 50)):
                started = clock()
                await call(index)
                samples[label].append(clock() - started)
    return samples


def raw_sqlite(path: Path) -> dict[str, Callable[[int], object]]:
    """The engine's own calls for get, set and increment, as a program would write them."""
    connection = connect(path)
    connection.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID")
    encoded = json.dumps(VALUE).encode()

    def get(index: int) -> object:
        return connection.execute("SELECT v FROM kv WHERE k = ?", ("k",)).fetchone()

    def put(index: int) -> object:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (f"k{index % 100}", encoded))
        return connection.execute("COMMIT")

    def increment(index: int) -> object:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO kv VALUES ('n', 1) ON CONFLICT (k) DO UPDATE SET v = v + 1 RETURNING v"
        ).fetchone()
        return connection.execute("COMMIT")

    put(0)
    return {"get": get, "set": put, "increment": increment}


def store_operations(store: Store) -> dict[str, Callable[[int], Awaitable[object]]]:
    return {
        "get": lambda index: store.get("k0"),
        "set": lambda index: store.set(f"k{index % 100}", VALUE),
        "increment": lambda index: store.increment("n"),
    }


def print_row(name: str, operation: str, samples: list[float], baseline: float | None) -> None:
    p50, p99, rate = percentiles(samples)
    ratio = f"{p50 / baseline:6.2f}" if baseline else "      "
    print(f"  {name:34} {operation:10} {p50:9.1f} {p99:9.1f} {rate:10.0f}   {ratio}")


async def operations(count: int, folder: Path, redis_url: str) -> None:
    print(f"store operations: {count} sequential calls each (microseconds; ratio: p50 / raw p50)")
    print(f"  {'backend':34} {'operation':10} {'p50':>9} {'p99':>9} {'ops/s':>10}   ratio")
    backends: list[tuple[str, Backend]] = [
        ("memory", MemoryBackend()),
        ("sqlite", SqliteBackend(folder / "store.sqlite3")),
        ("redis", RedisBackend(redis_url)),
    ]
    raw = raw_sqlite(folder / "raw.sqlite3")
    # The same calls on a connection of their own thread, as an asyncio program (and the
    # store) must make them.
    thread = ThreadPoolExecutor(1)
    threaded = thread.submit(raw_sqlite, folder / "raw-thread.sqlite3").result()
    import redis.asyncio

    # redis-py's defaults wrap each command in a socket timeout (a task and a loop turn per
    # write); the store times its calls itself, so the reference is the client without one.
    client = redis.asyncio.from_url(redis_url)
    bare_client = redis.asyncio.from_url(redis_url, socket_timeout=None)
    await client.set("k", json.dumps(VALUE))

    def raw_redis(client: Any) -> dict[str, Callable[[int], Awaitable[object]]]:
        return {
            "get": lambda index: client.get("k"),
            "set": lambda index: client.set(f"k{index % 100}", json.dumps(VALUE)),
            "increment": lambda index: client.incr("n"),
        }

    raw_default, raw_bare = raw_redis(client), raw_redis(bare_client)
    for name, backend in backends:
        store = Store(backend, "bench")
        await store.set("k0", VALUE)
        for operation, call in store_operations(store).items():
            calls: dict[str, Callable[[int], Awaitable[object]]] = {}
            if name == "sqlite":
                direct = raw[operation]

                async def call_direct(index: int, direct=direct) -> object:
                    return direct(index)

                async def call_in_thread(index: int, operation=operation) -> object:
                    loop = asyncio.get_running_loop()
                    return await loop.run_in_executor(thread, threaded[operation], index)

                calls["raw sqlite3, direct"] = call_direct
                calls["raw sqlite3, through a thread"] = call_in_thread
            elif name == "redis":
                calls["raw redis.asyncio, its defaults"] = raw_default[operation]
                calls["raw redis.asyncio, no timeout"] = raw_bare[operation]
            calls[f"valor {name}"] = call
            samples = await timed(calls, count)
            labels = list(samples)
            reference = percentiles(samples[labels[-2]])[0] if len(labels) > 1 else None
            for label in labels:
                print_row(
                    label, operation, samples[label], reference if label == labels[-1] else None
                )
        await backend.close()
    await client.aclose()
    await bare_client.aclose()


def serve(
    manifest: Path, store: str, folder: Path, *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "valor.cli", "serve", str(manifest), "--port", str(port)]
    command += ["--workers", "2", "--store", store, "--log-level", "warning", *args]
    process = subprocess.Popen(
        command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/_health", timeout=5).read()
            return process, url
        except OSError:
            time.sleep(0.1)
    stop_process(process)
    raise SystemExit("valor serve did not start")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux's /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.parent.name))
    found, waiting = [], [pid]
    while waiting:
        found.append(waiting.pop())
        waiting += children.get(found[-1], [])
    return found if Path("/proc").is_dir() else []


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def post_load(url: str, seconds: float, connections: int, folder: Path) -> float:
    """Requests per second of POSTs of one note, from wrk (else a Python generator)."""
    if shutil.which("wrk"):
        script = folder / "post.lua"
        script.write_text(
            'wrk.method = "POST"\nwrk.body = \'{"text": "a note"}\'\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(seconds))}s",
                "-s",
                str(script),
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            raise SystemExit(f"{errors.group(1)} POSTs failed:\n{out}")
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return asyncio.run(python_load(url, seconds, connections))


async def python_load(url: str, seconds: float, connections: int) -> float:
    import httpx

    done = 0
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        stop = time.monotonic() + seconds

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < stop:
                answer = await client.post(url, json={"text": "a note"})
                assert answer.status_code == 201, answer.text
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return done / (time.monotonic() - started)


def notes(seconds: float, rounds: int, folder: Path) -> None:
    (folder / "dict_notes.py").write_text(DICT_NOTES)
    example = {"name": "notes", "type": "python", "path": str(ROOT / "plugins" / "notes.py")}
    (folder / "notes.json").write_text(json.dumps({"plugins": [example]}))
    dict_notes = {"name": "notes", "type": "python", "path": "dict_notes.py"}
    (folder / "dict.json").write_text(json.dumps({"plugins": [dict_notes]}))
    targets = {
        "notes, sqlite store": ("notes.json", f"sqlite:///{folder}/notes.sqlite3"),
        "notes, memory: store": ("notes.json", "memory:"),
        "notes in a dict (before the store)": ("dict.json", "memory:"),
    }
    tool = "wrk" if shutil.which("wrk") else "a Python load generator"
    print(
        f"\nnotes POST throughput: valor serve --workers 2, {tool}, 32 connections, {seconds:g} s"
    )
    results: dict[str, list[float]] = {name: [] for name in targets}
    costs: dict[str, list[float]] = {name: [] for name in targets}  # CPU µs per request
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for name, (manifest, store) in targets.items():
            servers[name] = serve(folder / manifest, store, folder)
        for _, url in servers.values():  # warm-up: connections, imports, the notes' seed
            post_load(url + "/notes", 1, 32, folder)
        trees = {name: process_tree(process.pid) for name, (process, _) in servers.items()}
        for _ in range(rounds):
            # Each target's load of a round comes in bursts, the targets taking turns, so
            # that a busy machine's drift reaches them alike (as the operations' turns of 50
            # calls do); one target's whole round after another's varied 2x between them.
            rates: dict[str, list[float]] = {name: [] for name in targets}
            used = dict.fromkeys(targets, 0.0)
            served = dict.fromkeys(targets, 0.0)
            for _ in range(BURSTS):
                for name, (_, url) in servers.items():
                    before = cpu_seconds(trees[name])
                    rate = post_load(url + "/notes", seconds / BURSTS, 32, folder)
                    used[name] += cpu_seconds(trees[name]) - before
                    served[name] += rate * seconds / BURSTS
                    rates[name].append(rate)
            for name in targets:
                results[name].append(statistics.fmean(rates[name]))
                costs[name].append(used[name] / served[name] * 1e6 if used[name] else 0.0)
    finally:
        for process, _ in servers.values():
            stop_process(process)
    for name, rates in results.items():
        each = ", ".join(f"{rate:.0f}" for rate in rates)
        cost = statistics.median(costs[name])
        print(
            f"  {name:36} {statistics.median(rates):8.0f} requests/s  (rounds: {each})"
            + (f"; the server's CPU {cost:.0f} µs per request" if cost else "")
        )
    dict_notes = "notes in a dict (before the store)"
    ratios = [
        s / d for s, d in zip(results["notes, sqlite store"], results[dict_notes], strict=True)
    ]
    each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
    print(
        f"  sqlite / dict: {statistics.median(ratios):.2f} (median of {len(ratios)} rounds: "
        f"{each}; target >= 0.7)"
    )
    if costs[dict_notes][0]:
        # On a machine busier than its cores, the scheduler's share decides the requests per
        # second as much as the work does; the CPU time each request took is the work alone.
        shares = [
            d / s for s, d in zip(costs["notes, sqlite store"], costs[dict_notes], strict=True)
        ]
        each = ", ".join(f"{share:.2f}" for share in shares)
        print(f"  CPU per request, dict / sqlite: {statistics.median(shares):.2f} (rounds: {each})")


PID = "from valor import vlugin\nimport os\n@vlugin\ndef pid(req):\n    return str(os.getpid())\n"


def registry_follow(folder: Path, changes: int = 5) -> None:
    """Seconds from a ``POST /_plugins`` answered by one worker until every worker serves
    the new plug-in (``--workers 2``, the SQLite store)."""
    import httpx

    (folder / "pid.py").write_text(PID)
    pid = {"name": "pid", "type": "python", "path": "pid.py"}
    (folder / "registry.json").write_text(json.dumps({"plugins": [pid]}))
    os.environ["VALOR_TOKEN"] = "bench"
    process, url = serve(
        folder / "registry.json", f"sqlite:///{folder}/registry.sqlite3", folder, "--registry"
    )
    delays = []
    try:
        workers: dict[str, httpx.Client] = {}
        while len(workers) < 2:  # a keep-alive connection to each worker
            client = httpx.Client(base_url=url, limits=httpx.Limits(max_connections=1))
            found = client.get("/pid").text
            if found in workers:
                client.close()
            else:
                workers[found] = client
        for index in range(changes):
            definition = {"name": f"added-{index}", "type": "python", "path": "pid.py"}
            answer = httpx.post(
                url + "/_plugins", json=definition, headers={"authorization": "Bearer bench"}
            )
            assert answer.status_code == 201, answer.text
            posted = time.monotonic()
            waiting = set(workers)
            while waiting:
                for name in list(waiting):
                    if workers[name].get(f"/added-{index}").status_code == 200:
                        waiting.discard(name)
                time.sleep(0.005)
            delays.append(time.monotonic() - posted)
        for client in workers.values():
            client.close()
    finally:
        stop_process(process)
    each = ", ".join(f"{delay:.2f}" for delay in delays)
    most = max(delays)
    print(f"\nregistry: a POST /_plugins served by both of 2 workers after {most:.2f} s at most")
    print(f"  (each of {len(delays)} changes: {each}; target: within 1 s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-notes", action="store_true")
    parser.add_argument("--skip-browser", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="valor-store-bench-") as name:
        folder = Path(name)
        with redis_server(folder) as redis:
            asyncio.run(operations(args.ops, folder, redis.url))
        if not args.skip_notes:
            notes(args.seconds, args.rounds, folder)
        registry_follow(folder)
    if not args.skip_browser:  # IndexedDB in Chromium: benchmarks/store_browser.py
        from store_browser import measure, report

        print()
        report(measure(args.ops))
    print(f"\n(load average now: {', '.join(f'{x:.1f}' for x in os.getloadavg())})")


if __name__ == "__main__":
    main()
