"""Calls out: what a plug-in's call through Valor's client costs, in both hosts, in one run.

Plug-ins (written to a temporary folder):

- ``/target`` (B): answers hello; ``/sibling`` (A) answers by calling ``/target`` with
  ``ctx.http`` (inside the runtime). Target: the sibling call at most 1.3x the direct call:
  A's call to B (timed inside A) against a request to B. Also printed: a whole request to A
  against one to B, which is a request and a call, so about 2x by construction;
- ``/outside``: calls a bare uvicorn upstream on 127.0.0.1 with ``ctx.http``; ``/plain`` makes
  the same call with a plain ``httpx.AsyncClient`` (server) or plain ``fetch`` from the same
  worker (browser). Target: ``/outside`` at most 1.2x ``/plain``;
- ``/loop?n=N``: inside one request, N calls each way (Valor's client to the upstream, the
  plain one, and ``ctx.http`` to ``/target``), the median of each: the calls alone, without
  the request around them.

Requests are sequential, in rounds that visit every path in turn (a shared machine's speed
drifts; runs seconds apart mostly cancel); figures are medians over all rounds. The server is
``valor serve`` under uvicorn with one keep-alive connection; the browser is the same manifest
bundled by ``valor build`` in plain headless Chromium (not Playwright, which slows
service-worker traffic), whose page posts its figures back. The browser part also boots the
same bundle without httpx in ``requirements``, for what shipping httpx costs at boot.

    python benchmarks/callout.py [--rounds 10] [--requests 50] [--host server|browser|both]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "runtime_py"))
sys.path.insert(0, str(ROOT))

from benchmarks.kinds import run_in_chromium, start_upstream, wait_for  # noqa: E402
from valor.build import build  # noqa: E402
from valor.processes import free_port  # noqa: E402

PATHS = ("target", "sibling", "plain", "outside")

TARGET = """from valor import vlugin


@vlugin
async def on_request(req):
    return "Hello Plugin!"
"""

SIBLING = """from valor import vlugin


def on_create(ctx):
    pass


@vlugin
async def on_request(ctx, req):
    return (await ctx.http.get("/target")).text
"""

OUTSIDE = """from valor import vlugin


def on_create(ctx):
    ctx.state.upstream = ctx.config["upstream"]


@vlugin
async def on_request(ctx, req):
    return (await ctx.http.get(ctx.state.upstream)).text
"""

# The baseline: the same call without Valor's client.
PLAIN = """import sys

from valor import vlugin

IN_BROWSER = sys.platform == "emscripten"


def on_create(ctx):
    ctx.state.upstream = ctx.config["upstream"]
    if not IN_BROWSER:
        import httpx

        ctx.state.client = httpx.AsyncClient()


async def plain_call(ctx):
    if IN_BROWSER:
        from js import fetch

        return await (await fetch(ctx.state.upstream)).text()
    return (await ctx.state.client.get(ctx.state.upstream)).text


@vlugin
async def on_request(ctx, req):
    return await plain_call(ctx)
"""

LOOP = """import statistics
import time

from valor import vlugin

import plain  # the baseline, beside this module


def on_create(ctx):
    plain.on_create(ctx)


async def timed(n, call):
    times = []
    for _ in range(n):
        started = time.perf_counter()
        text = await call()
        times.append((time.perf_counter() - started) * 1000)
        assert text == "Hello Plugin!", text
    return statistics.median(times)


@vlugin
async def on_request(ctx, req):
    n = int(req.query_params.get("n", "200"))
    upstream = ctx.state.upstream

    async def valor_call():
        return (await ctx.http.get(upstream)).text

    async def plain_call():
        return await plain.plain_call(ctx)

    async def sibling_call():
        return (await ctx.http.get("/target")).text

    figures = {}
    for _ in range(3):  # interleaved, so drift hits all three alike
        for name, call in (("plain", plain_call), ("valor", valor_call), ("sibling", sibling_call)):
            figures.setdefault(name, []).append(await timed(n // 3, call))
    return {name: statistics.median(values) for name, values in figures.items()}
"""


def write_site(folder: Path, upstream: str, with_httpx: bool = True) -> Path:
    files = {"target": TARGET, "sibling": SIBLING, "outside": OUTSIDE, "plain": PLAIN}
    files["loop"] = LOOP
    plugins = []
    for name, code in files.items():
        (folder / f"{name}.py").write_text(code)
        plugin: dict[str, Any] = {"name": name, "type": "python", "path": f"{name}.py"}
        if name != "target":
            plugin["requirements"] = ["httpx"] if with_httpx else []
            plugin["config"] = {"upstream": upstream}
        plugins.append(plugin)
    manifest = folder / "plugins.json"
    manifest.write_text(json.dumps({"plugins": plugins}, indent=2))
    return manifest


def server_figures(manifest: Path, rounds: int, requests: int) -> dict[str, Any]:
    port = free_port()
    command = [sys.executable, "-m", "valor.cli", "serve", str(manifest), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "runtime_py")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    times: dict[str, list[float]] = {path: [] for path in PATHS}
    try:
        wait_for(port, "/_health", process, "valor serve")
        connection = http.client.HTTPConnection("127.0.0.1", port)

        def get(path: str) -> bytes:
            connection.request("GET", path)
            return connection.getresponse().read()

        for path in PATHS:  # warm up: imports, first calls, connections
            for _ in range(20):
                get(f"/{path}")
        for _ in range(rounds):
            for path in PATHS:
                for _ in range(requests):
                    started = time.perf_counter()
                    body = get(f"/{path}")
                    times[path].append((time.perf_counter() - started) * 1000)
                    if body != b"Hello Plugin!":
                        raise SystemExit(f"/{path}: wrong answer {body[:200]!r}")
        loop = json.loads(get("/loop?n=600"))
    finally:
        process.terminate()
        process.wait(10)
    return {"p50": {path: statistics.median(t) for path, t in times.items()}, "loop": loop}


BENCH_JS = """
const config = JSON.parse(new URLSearchParams(location.search).get("config"));
async function main() {
  const result = {times: {}};
  try {
    const { Valor } = await import("./valor.js");
    const state = await Valor.start();
    result.bootMs = state.bootMs;
    result.steps = state.steps;
    if (config.boot_only) throw null;
    const get = async (path) => {
      const text = await (await fetch(path)).text();
      if (text !== "Hello Plugin!") throw new Error(`${path}: wrong answer ${text.slice(0, 300)}`);
    };
    let t = performance.now();
    await get("sibling");
    result.firstCallMs = performance.now() - t;  // httpx imported, the client made
    for (const path of config.paths) for (let i = 0; i < 20; i++) await get(path);
    for (let round = 0; round < config.rounds; round++) {
      for (const path of config.paths) {
        const times = (result.times[path] ??= []);
        for (let i = 0; i < config.requests; i++) {
          t = performance.now();
          await get(path);
          times.push(performance.now() - t);
        }
      }
    }
    result.loop = await (await fetch("loop?n=600")).json();
  } catch (error) {
    if (error !== null) result.error = String(error?.stack ?? error);
  }
  await fetch("/results", { method: "POST", body: JSON.stringify(result) });
}
main();
"""


def browser_run(manifest: Path, work: Path, config: dict[str, Any]) -> dict[str, Any]:
    dist = work / "dist"
    build(manifest, dist, quiet=True)
    result = run_in_chromium(dist, BENCH_JS, config, work, 600)
    # What ships for Python: the runtime's wheel and the requirements, installed, in one archive.
    shipped = [*sorted((dist / "wheels").glob("*")), *dist.glob("requirements.zip")]
    result["wheel_bytes"] = {w.name: w.stat().st_size for w in shipped}
    return result


def browser_figures(work: Path, upstream: str, rounds: int, requests: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for with_httpx in (False, True):
        folder = work / ("with-httpx" if with_httpx else "without-httpx")
        (folder / "site").mkdir(parents=True)
        manifest = write_site(folder / "site", upstream, with_httpx)
        config = {"paths": PATHS, "rounds": rounds, "requests": requests}
        result = browser_run(manifest, folder, {**config, "boot_only": not with_httpx})
        figures["with" if with_httpx else "without"] = result
    result = figures["with"]
    result["p50"] = {path: statistics.median(t) for path, t in result["times"].items()}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--host", choices=("server", "browser", "both"), default="both")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="valor-callout-bench-"))
    up, port = start_upstream()
    upstream = f"http://127.0.0.1:{port}/"
    results: dict[str, Any] = {}
    try:
        if args.host in ("server", "both"):
            (work / "server").mkdir()
            manifest = write_site(work / "server", upstream)
            results["server"] = server_figures(manifest, args.rounds, args.requests)
        if args.host in ("browser", "both"):
            results["browser"] = browser_figures(work, upstream, args.rounds, args.requests)
    finally:
        up.terminate()
        up.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"sequential GETs, {args.rounds} rounds of {args.requests} per path; medians in ms")
    for host, figures in results.items():
        if host == "browser":
            figures = figures["with"]
        p50, loop = figures["p50"], figures["loop"]
        print(f"{host}:")
        for path in PATHS:
            print(f"  /{path:<9} {p50[path]:7.3f}")
        direct = p50["target"]
        sibling = p50["sibling"] / direct
        call = loop["sibling"] / direct
        print(f"  A's call to B (timed in A) / B direct  {call:.2f}x (target <= 1.3)")
        print(f"  a request to A calling B / one to B    {sibling:.2f}x (a request and a call)")
        ratio = p50["outside"] / p50["plain"]
        print(f"  Valor's client / plain, per request    {ratio:.2f}x (target <= 1.2)")
        print(
            f"  the calls alone (in one request): plain {loop['plain']:.3f}, Valor's client "
            f"{loop['valor']:.3f} ({loop['valor'] / loop['plain']:.2f}x), "
            f"a sibling {loop['sibling']:.3f}"
        )
    if "browser" in results:
        with_httpx, without = results["browser"]["with"], results["browser"]["without"]
        shipped = {n: s for n, s in with_httpx["wheel_bytes"].items() if not n.startswith("valor-")}
        print("browser boot (first visit, one run each):")
        print(f"  without httpx: {without['bootMs']} ms, steps {without['steps']}")
        print(f"  with httpx:    {with_httpx['bootMs']} ms, steps {with_httpx['steps']}")
        print(f"  first call (httpx imported, client made): {with_httpx['firstCallMs']:.0f} ms")
        print(f"  requirements shipped besides the runtime: {sum(shipped.values()) / 1e3:.0f} kB")
        for name, size in shipped.items():
            print(f"    {name} {size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
