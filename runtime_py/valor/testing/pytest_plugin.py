"""A pytest plug-in (registered as ``valor``): run one test against both of Valor's hosts.

::

    def test_hello(valor_host):
        assert valor_host.get("/hello").text == "Hello Plugin!"

runs twice: ``[server]`` against ``valor serve`` (real uvicorn on 127.0.0.1) and ``[browser]``
against the bundle built by ``valor build``, answered by the service worker and Pyodide in
headless Chromium. Both hosts are module-scoped; the manifest comes from the ``valor_manifest``
fixture (override it), else the ``valor_manifest`` ini option, else ``plugins/plugins.json``.
The browser run is skipped only when Playwright or Chromium is not installed; any other
failure fails. Choose hosts with ``--valor-hosts=server`` and a browser with ``$VALOR_CHROMIUM``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported when a host starts, so loading this plug-in stays cheap
    import httpx

    from .hosts import Chromium

HOSTS = ("server", "browser")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("valor")
    group.addoption(
        "--valor-hosts",
        default=",".join(HOSTS),
        help="hosts the valor_host fixture runs on (default: server,browser)",
    )
    parser.addini(
        "valor_manifest", "the manifest valor_host serves", default="plugins/plugins.json"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "valor_host" in metafunc.fixturenames:
        chosen = [h.strip() for h in metafunc.config.getoption("valor_hosts").split(",")]
        unknown = sorted(set(chosen) - set(HOSTS))
        if unknown:
            raise pytest.UsageError(
                f"--valor-hosts: unknown host {unknown[0]!r} (known: server, browser)"
            )
        metafunc.parametrize("valor_host", chosen, indirect=True, scope="module")


@pytest.fixture(scope="module")
def valor_manifest(pytestconfig: pytest.Config) -> Path:
    """The manifest ``valor_host`` serves: override this fixture to pick another."""
    return pytestconfig.rootpath / pytestconfig.getini("valor_manifest")


@pytest.fixture(scope="session")
def valor_chromium() -> Iterator[Chromium]:
    """One headless Chromium for the session's browser hosts (skips if none is installed)."""
    try:
        from playwright.async_api import async_playwright  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the browser host needs Playwright ({exc}); pip install playwright")
    from .hosts import Chromium, find_chromium

    executable = find_chromium()
    chromium = Chromium(executable)
    try:
        chromium.start()
    except Exception as exc:
        # Without a system Chromium, Playwright's own may simply not be downloaded.
        if executable is None and "Executable doesn't exist" in str(exc):
            pytest.skip(
                "the browser host needs Chromium: install it (e.g. apt-get install chromium), "
                "run `playwright install chromium`, or set VALOR_CHROMIUM"
            )
        raise
    yield chromium
    chromium.close()


@pytest.fixture(scope="module")
def valor_host(
    request: pytest.FixtureRequest,
    valor_manifest: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[httpx.Client]:
    """A running host serving ``valor_manifest``, as an ``httpx.Client``:
    ``valor_host.get("/hello")`` and the rest of httpx's API. ``valor_host.name`` is "server"
    or "browser"."""
    from .hosts import BrowserHost, ServerHost

    kind = getattr(request, "param", "server")
    folder = tmp_path_factory.mktemp(f"valor-{kind}")
    host: ServerHost | BrowserHost
    if kind == "server":
        host = ServerHost(valor_manifest, log_dir=folder)
    else:
        host = BrowserHost(valor_manifest, request.getfixturevalue("valor_chromium"), folder)
    with host:
        yield host
