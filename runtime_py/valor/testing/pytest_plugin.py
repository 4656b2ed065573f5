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

For a front end of your own, ``valor_page`` (with pytest-playwright) is a Playwright page at
your site's start page, its ``fetch()`` calls answered by the plug-ins in the browser, and
``valor_api`` the same test's overrides and recorded requests (see ``front_end``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # imported when a host starts, so loading this plug-in stays cheap
    import httpx

    from .front_end import SiteServer, ValorAPI
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
    parser.addini("valor_site", "the site folder valor_page serves (default: the manifest's)")
    parser.addini("valor_base", "the URL path valor_page's site is served under", default="/")
    parser.addini("valor_start_page", "valor_page's first page, relative to the base", default="")
    parser.addini(
        "valor_unhandled_requests",
        "a request of valor_page that no plug-in handled: error (fail the test), warn, bypass",
        default="error",
    )
    parser.addini(
        "valor_fresh_context",
        "give each valor_page test a browser context of its own (slower; the default reuses "
        "one, with an empty store and storage per test)",
        type="bool",
        default=False,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "valor_unhandled_requests(mode): what an unhandled request of valor_page does in this "
        "test: 'error', 'warn' or 'bypass'",
    )
    config.addinivalue_line(
        "markers", "valor_keep_store: valor_page keeps the store the tests before it left"
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


# -- front ends: valor_page --------------------------------------------------------------------


@pytest.fixture(scope="module")
def valor_site(pytestconfig: pytest.Config, valor_manifest: Path) -> Path | None:
    """The folder of the site ``valor_page`` serves: the ``valor_site`` ini option, else the
    manifest's ``"site"``. Override this fixture to pick another."""
    configured = pytestconfig.getini("valor_site")
    if configured:
        return pytestconfig.rootpath / configured
    from .front_end import site_of

    return site_of(valor_manifest)


@pytest.fixture(scope="session")
def _valor_sites() -> Iterator[dict[tuple[str, str, str], SiteServer]]:
    sites: dict[tuple[str, str, str], SiteServer] = {}
    yield sites
    for site in sites.values():
        site.close()


@pytest.fixture(scope="module")
def valor_front_end(
    pytestconfig: pytest.Config,
    valor_manifest: Path,
    valor_site: Path | None,
    _valor_sites: dict[tuple[str, str, str], SiteServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> SiteServer:
    """The manifest and site built for tests (once per session) and served on 127.0.0.1."""
    try:
        import pytest_playwright  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"valor_page needs pytest-playwright ({exc}); pip install pytest-playwright")
    from .front_end import SiteServer, build_for_tests

    base = pytestconfig.getini("valor_base") or "/"
    key = (str(Path(valor_manifest).resolve()), str(valor_site), base)
    if key not in _valor_sites:
        folder = tmp_path_factory.mktemp("valor-front-end")
        dist = build_for_tests(valor_manifest, valor_site, base, folder)
        _valor_sites[key] = SiteServer(dist, base, Path(valor_manifest))
    return _valor_sites[key]


@pytest.fixture(scope="session")
def valor_browser_context(browser: Any, browser_context_args: dict[str, Any]) -> Iterator[Any]:
    """The browser context ``valor_page`` reuses from test to test (pytest-playwright's
    ``browser`` and ``browser_context_args``): its service worker, cached bundle and compiled
    code stay, and its pages share each origin's runtime, booted once and reset per test."""
    from .front_end import START_SHARED

    context = browser.new_context(**browser_context_args)
    context.add_init_script(START_SHARED)
    yield context
    context.close()


@pytest.fixture
def valor_api(
    request: pytest.FixtureRequest, valor_front_end: SiteServer, browser_name: str
) -> Iterator[ValorAPI]:
    """This test's Valor: ``use(name, handler)`` overrides a plug-in for this test,
    ``requests`` lists what the page asked; its page is ``valor_page``.

    It asks for pytest-playwright's ``browser_name`` as its ``page`` does, so the test is
    parametrized alike (``[chromium]``) and shares their browser: a test between two others
    that is not would have pytest close and launch the session's browser again."""
    from .front_end import START_WAITS_FOR_PLUGINS, UNHANDLED_MODES, ValorAPI

    config = request.config
    mode = config.getini("valor_unhandled_requests")
    marker = request.node.get_closest_marker("valor_unhandled_requests")
    if marker is not None:
        mode = marker.args[0] if marker.args else marker.kwargs.get("mode", mode)
    if mode not in UNHANDLED_MODES:
        raise pytest.UsageError(
            f"valor_unhandled_requests: {mode!r} is not one of error, warn, bypass"
        )
    start_page = config.getini("valor_start_page")
    if _reuses_context(request, valor_front_end):
        context = request.getfixturevalue("valor_browser_context")
        runtimes: _SharedRuntimes = request.getfixturevalue("_valor_shared_runtimes")
        api = runtimes.open(context, valor_front_end, start_page, _keeps_store(request.node))
        shared = True
    else:
        context = request.getfixturevalue("context")  # pytest-playwright's, with its artifacts
        context.add_init_script(START_WAITS_FOR_PLUGINS)
        api = ValorAPI(context.new_page(), valor_front_end)
        api.watch()
        api.page.goto(api.url + start_page.lstrip("/"))
        api.wait_until_ready()
        shared = False
    yield api
    unhandled = list(api.unhandled)
    if shared:
        api.page.close()
    if unhandled and mode == "error":
        pytest.fail(api.unhandled_message(), pytrace=False)
    elif unhandled and mode == "warn":
        warnings.warn(api.unhandled_message(), stacklevel=1)


@pytest.fixture
def valor_page(valor_api: ValorAPI) -> Any:
    """A Playwright page at the site's start page, its Valor runtime ready (every plug-in
    loaded, the page's requests intercepted); plug-in state and the store start empty.
    Overrides: ``valor_api``."""
    return valor_api.page


class _SharedRuntimes:
    """One Valor runtime per site for the tests of a shared context: in the site's first test a
    page at the start page boots it (in a shared worker, ``front_end.START_SHARED``) and a page
    of its own (the keeper) joins it, to keep it alive between tests; before each test the
    keeper resets it: the
    runtime closes (its plug-ins, the store's connection), the origin's cookies and storage
    are emptied (IndexedDB with the plug-ins' store and the overrides, local storage), and a
    fresh runtime starts in the same Pyodide (plug-ins imported again, state empty, the
    manifest's mounts). Then the test's own page opens and joins it. Only the running site's
    runtime is kept: a test of another site lets it go (each is a Pyodide's memory)."""

    def __init__(self) -> None:
        self.keepers: dict[int, Any] = {}  # site -> the keeper page
        self.sessions: dict[int, Any] = {}  # site -> the keeper's DevTools session

    def open(self, context: Any, site: SiteServer, start_page: str, keep_store: bool) -> ValorAPI:
        from playwright.sync_api import Error as PlaywrightError

        from . import front_end
        from .front_end import RESET, RESET_UNAWAITED, ValorAPI

        for other in [key for key in self.keepers if key != id(site)]:
            self._let_go(other)  # one Pyodide alive at a time: a site's tests come together
        keeper = self.keepers.get(id(site))
        if keeper is not None and (keeper.is_closed() or keeper.context != context):
            self._let_go(id(site))  # from a browser pytest has launched again since
            keeper = None
        if keeper is None:
            keeper = self._boot(context, site, start_page)
        try:
            keeper.evaluate(RESET, {"stage": "stop", "ms": front_end.RESET_MS})
        except PlaywrightError as exc:
            message = str(exc).splitlines()[0]
            warnings.warn(
                f"valor_page: booting a new runtime, as the last one did not close: {message}",
                stacklevel=1,
            )
            self._let_go(id(site))  # its worker ends with its last page
            keeper = self._boot(context, site, start_page)
            keeper.evaluate(RESET, {"stage": "stop", "ms": front_end.RESET_MS})
        if not keep_store:
            context.clear_cookies(domain=site.HOST)
            self.sessions[id(site)].send("Storage.clearDataForOrigin", _clear_data(site.origin))
        # The test's page opens while the runtime starts, and waits for it.
        keeper.evaluate(RESET_UNAWAITED, "start")
        api = ValorAPI(context.new_page(), site)
        try:
            api.watch()
            api.page.goto(api.url + start_page.lstrip("/"))
            api.wait_until_ready()
        except BaseException:
            api.page.close()
            raise
        return api

    def _boot(self, context: Any, site: SiteServer, start_page: str) -> Any:
        """Boot the site's runtime from a page at the start page, and keep it with a keeper
        page; the test's own page comes after a reset, as in every later test (so the first
        reset, slower, as V8 is still optimizing Pyodide's code, is this test's too)."""
        from .front_end import KEEP, SHARED_RUNTIME, ValorAPI

        booting = ValorAPI(context.new_page(), site)  # its requests are nobody's
        try:
            booting.page.goto(site.url + start_page.lstrip("/"))
            booting.wait_until_ready()
            keeper = context.new_page()
            keeper.goto(site.url + "valor-bundle.json")
            options = booting.page.evaluate("() => Valor.startOptions ?? {}")
            keeper.evaluate(KEEP, {"base": site.base, "options": options, "shared": SHARED_RUNTIME})
        finally:
            booting.page.close()
        self.keepers[id(site)] = keeper
        self.sessions[id(site)] = context.new_cdp_session(keeper)
        return keeper

    def _let_go(self, site: int) -> None:
        """Close a site's keeper: its runtime ends with it (no test's page is open)."""
        keeper = self.keepers.pop(site)
        self.sessions.pop(site, None)
        if not keeper.is_closed():
            keeper.close()

    def close(self) -> None:
        for site in list(self.keepers):
            self._let_go(site)


@pytest.fixture(scope="session")
def _valor_shared_runtimes() -> Iterator[_SharedRuntimes]:
    runtimes = _SharedRuntimes()
    yield runtimes
    runtimes.close()


def _keeps_store(item: pytest.Item) -> bool:
    return item.get_closest_marker("valor_keep_store") is not None


def _reuses_context(request: pytest.FixtureRequest, site: SiteServer) -> bool:
    """Whether this test can share the warm context: Chromium (its storage is emptied through
    the DevTools protocol), no pytest-playwright artifacts, which are per context, and no
    js, wasm or wasi plug-in in the manifest (each runs in a worker of its own, and Chromium's
    shared workers, which hold the shared runtime, cannot start workers)."""
    config = request.config
    if config.getini("valor_fresh_context") or site.needs_workers:
        return False
    if request.getfixturevalue("browser_name") != "chromium":  # as the test's parameter
        return False
    recording = ("--tracing", "--video", "--screenshot")
    return all(config.getoption(option, "off") in ("off", None) for option in recording)


def _empty_storage(context: Any, page: Any, origin: str) -> None:
    """The site's IndexedDB (the plug-ins' store and the registry's overrides) and local
    storage, emptied; the service worker and its cached bundle stay."""
    context.new_cdp_session(page).send("Storage.clearDataForOrigin", _clear_data(origin))
    # the session ends with the page


def _clear_data(origin: str) -> dict[str, str]:
    """What ``Storage.clearDataForOrigin`` empties between tests (the service worker and its
    cache stay)."""
    return {"origin": origin, "storageTypes": "indexeddb,local_storage,websql,file_systems"}
