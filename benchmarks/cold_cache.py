"""Valor's hello against bare Starlette as ASGI apps in-process, with warm and cold caches.

Why: callgrind counts instructions (Valor's hello about 1.1x Starlette's), yet under wrk the
server spends about 22 us more CPU per request than Starlette's, user and system time alike.
A server between requests wakes with caches other work (the kernel's, wrk's) has refilled, so
what a request costs depends on how many distinct cache lines (code, inline caches, objects)
it touches, which instruction counts do not see. This script calls each app directly, one
task per request as uvicorn makes, with a fake receive and send (no sockets): once hot, once
with a buffer larger than the core's L2 copied between requests (``--flush-mb``, its time not
counted). The hot gap is the instruction gap; the cold gap is what the server shows.

    python benchmarks/cold_cache.py [--requests 2000] [--rounds 3] [--flush-mb 6]

Prints CPU microseconds per request (process time) for each app, hot and cold, alternating
rounds, and the median ratio Starlette / Valor (the throughput ratio a CPU-bound server would
get).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _scope() -> dict[str, Any]:
    # What uvicorn's httptools protocol gives for wrk's request (Host only).
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": "/hello",
        "raw_path": b"/hello",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000")],
        "state": {},
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


async def _valor_app() -> Any:
    from valor.server import create_app

    folder = Path(tempfile.mkdtemp())
    manifest = folder / "plugins.json"
    hello = ROOT / "plugins" / "hello.py"
    manifest.write_text(
        json.dumps({"plugins": [{"name": "hello", "type": "python", "path": str(hello)}]})
    )
    app = create_app(manifest, store=f"sqlite:///{folder / 'store.db'}")
    await app.startup()
    return app


async def _per_request(app: Any, requests: int, flush: bytearray | None) -> float:
    """CPU microseconds per request, the flushes' own time taken out."""
    loop = asyncio.get_running_loop()
    copy = bytearray(len(flush)) if flush is not None else None
    flushing = 0.0
    started = time.process_time()
    for _ in range(requests):
        if flush is not None:
            before = time.process_time()
            copy[:] = flush  # type: ignore[index]
            flushing += time.process_time() - before
        await loop.create_task(app(_scope(), _receive, _send))
    return (time.process_time() - started - flushing) / requests * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--flush-mb", type=int, default=6, help="more than the core's L2")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from benchmarks.baseline_app import app as starlette

    apps = {"valor": await _valor_app(), "starlette": starlette}
    flush = bytearray(args.flush_mb << 20)
    for app in apps.values():  # warm up: specialisation, caches of both
        await _per_request(app, 2000, None)
    for mode, buffer in (("hot", None), ("cold", flush)):
        ratios = []
        for _ in range(args.rounds):
            costs = {
                name: await _per_request(app, args.requests, buffer) for name, app in apps.items()
            }
            ratios.append(costs["starlette"] / costs["valor"])
            print(
                f"{mode:<4} valor {costs['valor']:7.1f} us  starlette {costs['starlette']:7.1f} us"
                f"  gap {costs['valor'] - costs['starlette']:5.1f} us",
                flush=True,
            )
        print(f"{mode:<4} median ratio starlette/valor: {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
