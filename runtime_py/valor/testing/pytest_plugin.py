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
    ``browser`` and ``browser_context_args``): its service worker and cached bundle stay,
    so a test's page boots from the cache; its store and storage are emptied per test."""
    from .front_end import START_WAITS_FOR_PLUGINS

    context = browser.new_context(**browser_context_args)
    context.add_init_script(START_WAITS_FOR_PLUGINS)
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
    shared = _reuses_context(request)
    start_page = config.getini("valor_start_page")
    if shared:
        context = request.getfixturevalue("valor_browser_context")
        pages: _SparePages = request.getfixturevalue("_valor_spare_pages")
        api = pages.take(context, valor_front_end, start_page, _keeps_store(request.node))
    else:
        context = request.getfixturevalue("context")  # pytest-playwright's, with its artifacts
        context.add_init_script(START_WAITS_FOR_PLUGINS)
        api = ValorAPI(context.new_page(), valor_front_end)
        api.watch()
        api.page.goto(api.url + start_page.lstrip("/"))
    page = api.page
    try:
        api.wait_until_ready()
        # None boots for the next test yet (the first test, say): one starts now.
        if shared and _boots_ahead_for(_next_page_test(request.node)):
            pages.prepare(context, valor_front_end, start_page)
    except BaseException:
        if shared:
            pages.release(valor_front_end, page)
        raise
    yield api
    unhandled = list(api.unhandled)
    if shared:
        pages.release(valor_front_end, page)
        # A page for the test after the next one starts here, on the origin this test leaves,
        # so it boots during the next test too; not when the next test keeps this store.
        following = _next_page_test(request.node)
        if _boots_ahead_for(following, _next_page_test(following)):
            pages.prepare(context, valor_front_end, start_page)
    if unhandled and mode == "error":
        pytest.fail(api.unhandled_message(), pytrace=False)
    elif unhandled and mode == "warn":
        warnings.warn(api.unhandled_message(), stacklevel=1)


@pytest.fixture
def valor_page(valor_api: ValorAPI) -> Any:
    """A Playwright page at the site's start page, its Valor runtime ready (every plug-in
    loaded); plug-in state and the store start empty. Overrides: ``valor_api``."""
    return valor_api.page


class _SparePages:
    """Pages booting ahead for the next tests, one site's on each of its origins
    (``SiteServer.urls``) that no test's page is on: an origin's store, storage and cookies are
    emptied before its page loads, so the page is as fresh as one opened when its test starts,
    and its runtime boots while the tests before run. A test takes the oldest."""

    def __init__(self) -> None:
        self.spares: dict[int, list[ValorAPI]] = {}  # site -> pages booting, oldest first
        self.in_use: dict[int, int] = {}  # site -> the origin index of the running test's page
        self.last: dict[int, int] = {}  # site -> the origin index of the last test's page

    def take(self, context: Any, site: SiteServer, start_page: str, keep_store: bool) -> ValorAPI:
        spares = self.spares.setdefault(id(site), [])
        for spare in list(spares):
            if spare.page.is_closed() or spare.page.context != context:
                spares.remove(spare)  # from a browser pytest has launched again since
        if keep_store:  # the last test's origin, with its store
            index = self.last.get(id(site), 0)
            for spare in [s for s in spares if s.url == site.urls[index]]:
                spares.remove(spare)  # emptied already: what the test keeps is an empty store
                spare.page.close()
            api = self._open(context, site, index, start_page, empty=False)
        elif spares:
            api = spares.pop(0)
        else:
            index = 1 - self.last.get(id(site), 1)
            api = self._open(context, site, index, start_page, empty=True)
        index = site.urls.index(api.url)
        self.in_use[id(site)] = self.last[id(site)] = index
        return api

    def release(self, site: SiteServer, page: Any) -> None:
        """The test's page is done: closed, and its origin free for a page of a later test."""
        page.close()
        self.in_use.pop(id(site), None)

    def prepare(self, context: Any, site: SiteServer, start_page: str) -> None:
        """Start a page for a later test on an origin no page is on, if there is one."""
        index = self._free(site, prefer=1 - self.last.get(id(site), 1))
        if index is not None:
            spare = self._open(context, site, index, start_page, empty=True)
            self.spares.setdefault(id(site), []).append(spare)

    def _free(self, site: SiteServer, prefer: int) -> int | None:
        taken = {site.urls.index(spare.url) for spare in self.spares.get(id(site), [])}
        taken.add(self.in_use.get(id(site), -1))
        free = [index for index in (prefer, 1 - prefer) if index not in taken]
        return free[0] if free else None

    def _open(
        self, context: Any, site: SiteServer, index: int, start_page: str, empty: bool
    ) -> ValorAPI:
        from .front_end import ValorAPI

        api = ValorAPI(context.new_page(), site, site.urls[index])
        try:
            if empty:
                context.clear_cookies(domain=site.HOSTS[index])
                _empty_storage(context, api.page, api.origin)
            api.watch()
            # Not waiting for the navigation, not even its answer: the runtime boots on its
            # own, and wait_until_ready waits for it.
            api.page.evaluate(NAVIGATE, api.url + start_page.lstrip("/"))
        except BaseException:
            api.page.close()
            raise
        return api

    def close(self) -> None:
        for spares in self.spares.values():
            for api in spares:
                api.page.close()
        self.spares.clear()


@pytest.fixture(scope="session")
def _valor_spare_pages() -> Iterator[_SparePages]:
    pages = _SparePages()
    yield pages
    pages.close()


NAVIGATE = "(url) => { location.assign(url); }"
"""Starts a navigation without waiting for it (``page.goto`` waits at least for its answer)."""

_NEXT_PAGE_TESTS = pytest.StashKey[dict[int, "pytest.Item | None"]]()


def _next_page_test(item: pytest.Item | None) -> pytest.Item | None:
    """The first test after ``item`` in the session's order that has a ``valor_page``."""
    if item is None:
        return None
    session = item.session
    if _NEXT_PAGE_TESTS not in session.stash:  # built once, when the order is final
        following: dict[int, pytest.Item | None] = {}
        page_test = None
        for later in reversed(session.items):
            following[id(later)] = page_test
            if "valor_api" in getattr(later, "fixturenames", ()):
                page_test = later
        session.stash[_NEXT_PAGE_TESTS] = following
    return session.stash[_NEXT_PAGE_TESTS].get(id(item))


def _boots_ahead_for(first: pytest.Item | None, second: pytest.Item | None = None) -> bool:
    """Whether a page booting now would be taken: by ``first``, the next test with a page,
    or (given) by ``second``, the one after it, when ``first`` takes the one booting
    already. A test that keeps the store takes none, and wants the origin of the test
    before it as that test left it."""
    tests = [first] if second is None else [first, second]
    return all(test is not None and not _keeps_store(test) for test in tests)


def _keeps_store(item: pytest.Item) -> bool:
    return item.get_closest_marker("valor_keep_store") is not None


def _reuses_context(request: pytest.FixtureRequest) -> bool:
    """Whether this test can share the warm context: Chromium (its storage is emptied through
    the DevTools protocol), and no pytest-playwright artifacts, which are per context."""
    config = request.config
    if config.getini("valor_fresh_context"):
        return False
    if request.getfixturevalue("browser_name") != "chromium":  # as the test's parameter
        return False
    recording = ("--tracing", "--video", "--screenshot")
    return all(config.getoption(option, "off") in ("off", None) for option in recording)


def _empty_storage(context: Any, page: Any, origin: str) -> None:
    """The site's IndexedDB (the plug-ins' store and the registry's overrides) and local
    storage, emptied; the service worker and its cached bundle stay."""
    session = context.new_cdp_session(page)
    session.send(
        "Storage.clearDataForOrigin",
        {"origin": origin, "storageTypes": "indexeddb,local_storage,websql,file_systems"},
    )  # the session ends with the page
