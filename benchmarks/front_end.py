"""The per-test cost of ``valor_page``: how long a test spends in the fixture before its first
line runs, beside Mock Service Worker's equivalent set-up in the same run.

A pytest session of its own (pytest-playwright, Chromium) runs ``--tests`` trivial tests of
each kind, interleaved (``--grouped``: one kind after the other): ``valor_page`` on the to-do
example (``plugins/todo``), and an
``msw_page`` fixture doing for MSW what ``valor_page`` does for Valor: a new page in a context
shared by the tests, its storage emptied, the start page loaded and its mocks started
(``worker.start()``). Reported: the median and p90 of the tests' setup times and the median
teardown, the first test of each kind left out (it builds the bundle, launches the browser and
fills the cache), and the median CPU time per test (set-up, test and teardown) of the pytest
process and every process under it, the browser's included: unlike the wall-clock times, it
hardly grows when other work shares the machine. In the shared context ``valor_page`` resets
the site's runtime, booted once, in each test's set-up (see docs/testing.md), and its teardown
only closes the page; set-up plus teardown is what a test waits. Then the same for Valor with
``valor_fresh_context = true`` (a context per test, as with pytest-playwright's artifacts:
each test's page boots Pyodide). Target: Valor's median set-up <= 0.5 s, ``--grouped`` too:
back to back, nothing a page does ahead of its test can hide there.

    python benchmarks/front_end.py [--tests 15] [--grouped]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MSW = ROOT / "node_modules" / "msw"
TARGET = 0.5  # seconds

CONFTEST = '''
import json, os, threading
from pathlib import Path

import pytest

from valor.static import StaticServer
from valor.testing.hosts import CHROMIUM_ARGS, find_chromium
from valor.testing.pytest_plugin import _empty_storage

DURATIONS = {"setup": {}, "teardown": {}, "cpu": {}}


def tree_cpu():
    """CPU seconds of this process and every process under it (the Playwright driver, the
    browser, its renderers and workers), their reaped children's included."""
    below = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        below.setdefault(int(fields[1]), []).append((int(entry), fields))
    ticks, todo, total = os.sysconf("SC_CLK_TCK"), [os.getpid()], 0
    own = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    total += sum(int(own[i]) for i in (11, 12, 13, 14))
    while todo:
        for pid, fields in below.get(todo.pop(), []):
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))  # utime stime cutime cstime
            todo.append(pid)
    return total / ticks


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = tree_cpu()
    yield
    DURATIONS["cpu"][item.name] = tree_cpu() - before


@pytest.fixture(scope="session")
def browser_type_launch_args():
    return {"executable_path": find_chromium(), "headless": True, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="module")
def valor_manifest():
    return Path(os.environ["BENCH_MANIFEST"])


@pytest.fixture(scope="session")
def msw_site():
    server = StaticServer(Path(os.environ["BENCH_MSW_SITE"]), "/")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def msw_context(browser, browser_context_args):
    context = browser.new_context(**browser_context_args)
    yield context
    context.close()


@pytest.fixture
def msw_page(msw_context, msw_site):
    """What valor_page does, for MSW: a new page of the shared context, storage emptied,
    the start page loaded with its mocks started."""
    page = msw_context.new_page()
    msw_context.clear_cookies()
    _empty_storage(msw_context, page, msw_site.url.rstrip("/"))
    page.goto(msw_site.url)
    page.wait_for_function("() => globalThis.mocksReady === true", timeout=60_000)
    yield page
    page.close()


def pytest_collection_modifyitems(items):
    if os.environ["BENCH_ORDER"] == "grouped":  # each kind's tests one after another
        items.sort(key=lambda item: (item.name.split("[")[0], item.callspec.params["n"]))
    else:  # interleaved: the same conditions
        items.sort(key=lambda item: item.callspec.params["n"])


def pytest_runtest_logreport(report):
    if report.when in DURATIONS and report.passed:
        DURATIONS[report.when][report.nodeid.split("::")[-1]] = report.duration


def pytest_sessionfinish(session):
    Path(os.environ["BENCH_OUT"]).write_text(json.dumps(DURATIONS))
'''

TESTS = """
import pytest

@pytest.mark.parametrize("n", range({count}))
def test_valor(valor_page, n):
    assert valor_page.title() == "To-do"

@pytest.mark.parametrize("n", range({count}))
def test_msw(msw_page, n):
    assert msw_page.title() == "To-do"
"""

MSW_PAGE = """<!doctype html><meta charset="utf-8"><title>To-do</title>
<script src="msw.js"></script>
<script type="module">
const { setupWorker, http, HttpResponse } = self.MockServiceWorker;
const todos = [];
const worker = setupWorker(
  http.get("api/todos", () => HttpResponse.json({ todos })),
  http.post("api/todos", async ({ request }) => {
    const todo = { id: todos.length + 1, title: (await request.json()).title, done: false };
    todos.push(todo);
    return HttpResponse.json(todo, { status: 201 });
  }),
);
await worker.start({ serviceWorker: { url: "mockServiceWorker.js" }, quiet: true });
globalThis.mocksReady = true;
</script>"""


def run(work: Path, count: int, fresh: bool, order: str) -> dict[str, dict[str, list[float]]]:
    """Each kind's set-up and teardown times, by phase: {"setup": {"valor": [...], ...}}."""
    out = work / f"durations-{fresh}.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "runtime_py"), os.environ.get("PYTHONPATH", "")]),
        "BENCH_MANIFEST": str(ROOT / "plugins" / "todo" / "plugins.json"),
        "BENCH_MSW_SITE": str(work / "msw"),
        "BENCH_OUT": str(out),
        "BENCH_ORDER": order,
    }
    options = ["-o", f"valor_fresh_context={'true' if fresh else 'false'}"]
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
               f"--basetemp={work / f'tmp-{fresh}'}", *options, "test_pages.py"]  # fmt: skip
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the benchmark's tests failed:\n{done.stdout}\n{done.stderr}")
    durations = json.loads(out.read_text())
    by_phase: dict[str, dict[str, list[float]]] = {}
    for phase, times in durations.items():
        if len(times) != 2 * count:
            raise SystemExit(f"expected {2 * count} {phase}s, got {sorted(times)}:\n{done.stdout}")
        by_kind: dict[str, list[float]] = by_phase.setdefault(phase, {"valor": [], "msw": []})
        for name, duration in times.items():
            # test_msw[chromium-3]: pytest-playwright adds the browser to tests using its fixtures
            kind, n = re.fullmatch(r"test_(\w+)\[(?:\w+-)?(\d+)\]", name).groups()
            if n != "0":  # the first of each kind builds, launches and fills the cache
                by_kind[kind].append(duration)
    return by_phase


def summary(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=15, help="tests of each kind (default 15)")
    parser.add_argument(
        "--grouped",
        action="store_true",
        help="run each kind's tests one after another instead of interleaved: a page booting "
        "ahead then has only the tests of its own kind to boot during",
    )
    args = parser.parse_args()
    if not (MSW / "package.json").exists():
        raise SystemExit("msw is not installed: run npm ci (it is pinned in package.json)")
    with tempfile.TemporaryDirectory(prefix="valor-front-end-bench-") as folder:
        work = Path(folder)
        (work / "msw").mkdir()
        shutil.copy(MSW / "lib" / "iife" / "index.js", work / "msw" / "msw.js")
        shutil.copy(MSW / "lib" / "mockServiceWorker.js", work / "msw" / "mockServiceWorker.js")
        (work / "msw" / "index.html").write_text(MSW_PAGE)
        (work / "conftest.py").write_text(CONFTEST)
        (work / "test_pages.py").write_text(TESTS.format(count=args.tests))
        (work / "pytest.ini").write_text("[pytest]\n")
        order = "grouped" if args.grouped else "interleaved"
        shared = run(work, args.tests, fresh=False, order=order)
        fresh = run(work, args.tests, fresh=True, order=order)
    rows = [
        ("valor_page (shared context)", shared, "valor"),
        ("valor_page (valor_fresh_context = true)", fresh, "valor"),
        ("MSW, same set-up (shared context)", shared, "msw"),
        ("MSW, in the second run", fresh, "msw"),
    ]
    print(
        f"Per-test set-up before the test's first line, {args.tests - 1} tests each, {order}"
        " (seconds)"
    )
    print(f"{'':44}{'median':>8}{'p90':>8}{'teardown':>10}{'CPU/test':>10}")
    for label, durations, kind in rows:
        median, p90 = summary(durations["setup"][kind])
        teardown, _ = summary(durations["teardown"][kind])
        cpu, _ = summary(durations["cpu"][kind])
        print(f"{label:44}{median:8.3f}{p90:8.3f}{teardown:10.3f}{cpu:10.3f}")
    valor, _ = summary(shared["setup"]["valor"])
    msw, _ = summary(shared["setup"]["msw"])
    print(f"Valor/MSW (shared context): {valor / msw:.2f}")
    verdict = "met" if valor <= TARGET else "missed"
    print(f"target: valor_page median <= {TARGET} s: {verdict} ({valor:.3f} s)")


if __name__ == "__main__":
    main()
