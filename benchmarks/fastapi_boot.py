"""The first answer of a repeat visit: the FastAPI bundle (``plugins/asgi.json``: FastAPI,
Pydantic and Starlette among its requirements, in its memory snapshot) beside the plain
examples' bundle (``plugins/plugins.json``), in the same run. Each run is a new browser
profile: a first visit (which fills the service worker's cache), then the page again in the
same profile, timed from its navigation to the first plug-in answer (``performance.now()`` in
the page). Target: the FastAPI bundle at most 1.5x the plain one.

Chromium is driven by Playwright with a persistent profile (times are taken in the page).

    python benchmarks/fastapi_boot.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "runtime_py"))

from valor.build import build, serve  # noqa: E402
from valor.testing.hosts import CHROMIUM_ARGS  # noqa: E402

BUNDLES = {
    "plain": (ROOT / "plugins" / "plugins.json", "hello"),
    "fastapi": (ROOT / "plugins" / "asgi.json", "shop"),
}
BLANK = '<!doctype html><meta charset="utf-8"><script type="module" src="valor.js"></script>'
FIRST_ANSWER = """async (path) => {
  await Valor.start();
  const answer = await fetch(path);
  await answer.arrayBuffer();
  return {ms: performance.now(), status: answer.status, steps: Valor.detail.steps,
          snapshot: Valor.detail.snapshot};
}"""


def visits(url: str, path: str, profile: Path) -> dict:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(300_000)
        try:
            page = context.new_page()
            page.goto(url + "blank.html")
            first = page.evaluate(FIRST_ANSWER, path)
            page.goto(url + "blank.html")
            repeat = page.evaluate(FIRST_ANSWER, path)
        finally:
            context.close()
    if first["status"] != 200 or repeat["status"] != 200:
        raise SystemExit(f"{path} answered {first['status']} and {repeat['status']}")
    return {"first": first, "repeat": repeat}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[dict]] = {name: [] for name in BUNDLES}
    with tempfile.TemporaryDirectory() as work:
        sites = {}
        for name, (manifest, _) in BUNDLES.items():
            folder = Path(work) / name
            build(manifest, folder, quiet=True)
            (folder / "blank.html").write_text(BLANK)
            site = serve(folder, "/")
            threading.Thread(target=site.serve_forever, daemon=True).start()
            sites[name] = site
        try:
            for run in range(args.runs):
                for name, (_, path) in BUNDLES.items():
                    profile = Path(work) / f"profile-{name}-{run}"
                    figures[name].append(visits(sites[name].url, path, profile))
        finally:
            for site in sites.values():
                site.shutdown()
                site.server_close()
    medians = {}
    for name, runs in figures.items():
        first = statistics.median(r["first"]["ms"] for r in runs)
        repeat = statistics.median(r["repeat"]["ms"] for r in runs)
        medians[name] = repeat
        steps = runs[-1]["repeat"]["steps"]
        each = ", ".join(f"{r['repeat']['ms']:.0f}" for r in runs)
        print(f"{name}: first visit {first:.0f} ms, repeat visit {repeat:.0f} ms (runs: {each});"
              f" last repeat's boot steps {steps}")  # fmt: skip
    ratio = medians["fastapi"] / medians["plain"]
    print(f"repeat visit, fastapi / plain: {ratio:.2f}x (target <= 1.5x)"
          f" {'ok' if ratio <= 1.5 else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
