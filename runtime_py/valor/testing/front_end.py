"""Testing a front end against Valor with Playwright: the user's site built with the runtime,
served on 127.0.0.1, and a page of it whose ``fetch()`` calls the plug-ins answer.

``build_for_tests`` builds the bundle (once per session, by the pytest plug-in's fixtures),
``SiteServer`` serves it, and ``ValorAPI`` is what a test holds beside its page: per-test
overrides (``use``, as Mock Service Worker's ``server.use()``), the requests the page made
(``requests``), and the ones no plug-in handled (``unhandled``). Playwright is imported by the
caller, never here, so the pytest plug-in stays cheap to load.
"""

from __future__ import annotations

import inspect
import json
import shutil
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..build import build, serve
from ..kinds.shared.browser_ffi import KINDS_IN_WORKERS
from ..manifest import load_manifest

INLINE_PLUGIN = "_valor_testing/inline.py"
"""Where the bundle built for tests keeps the plug-in that runs inline handlers."""
CONTROL_HEADER = "x-valor-testing"
"""Marks the fixture's own calls to ``/_plugins``, which are not the page's requests."""
BOOT_MS = 120_000  # a busy machine boots Pyodide slowly
UNHANDLED_MODES = ("error", "warn", "bypass")
COPY_SKIPS = {"__pycache__", "node_modules", "target"}  # large, and never a plug-in's file
KINDS_BY_SUFFIX = {".py": "python", ".js": "js", ".wasm": "wasm"}

SHARED_RUNTIME = "valor-testing"
"""The name of the shared worker whose runtime the pages of a shared context join."""

# Runs before the page's own scripts: Valor.start() resolves once every plug-in has loaded and
# the registry's changes (a test's overrides, kept in the site's store) are mounted, so the
# page's first requests after a reload never reach a plug-in an override replaces. With
# `shared`, the page's runtime is the origin's shared one (booted once, reset between tests),
# and the page's options are kept for the page that keeps it alive between tests.
_START = """((shared) => {
  let valor;
  Object.defineProperty(globalThis, "Valor", {
    configurable: true,
    get: () => valor,
    set(runtime) {
      valor = runtime;
      const start = runtime.start.bind(runtime);
      runtime.start = (options = {}) => {
        runtime.startOptions = options;
        const chosen = shared ? {...options, shared} : options;
        return start(chosen).then(() => runtime.loaded());
      };
    },
  });
})(%s);"""
START_WAITS_FOR_PLUGINS = _START % "null"
START_SHARED = _START % json.dumps(SHARED_RUNTIME)

# The page that keeps an origin's shared runtime alive between tests (a shared worker ends
# with its last page) and resets it: the bundle's valor.js joins the runtime a test's page
# booted, with that page's options.
KEEP = """async ({base, options, shared}) => {
  const { Valor } = await import(`${base}valor.js`);
  await Valor.start({...options, shared});
  await Valor.loaded();
}"""
RESET = """async ({stage, ms}) => {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms / 1000} s`)), ms);
  });
  try { await Promise.race([Valor.reset(stage), late]); } finally { clearTimeout(timer); }
}"""
RESET_MS = 30_000
"""How long closing the runtime between tests may take: longer, and it is taken for wedged (a
plug-in blocking its thread) and a new one boots."""
RESET_UNAWAITED = "(stage) => { Valor.reset(stage).catch(() => {}); }"
"""Starts a reset's stage; a failure to start shows on every page of the runtime (status
``error``), where ``ValorAPI.wait_until_ready`` reports it."""

# Ready: every plug-in loaded, and start() resolved (its startMs set), so the service worker
# intercepts the page's requests. The runtime's worker can be ready first: on a busy machine
# the service worker's install and claim can take longer than a boot from the snapshot.
READY = """() => {
  const valor = globalThis.Valor;
  if (!valor || valor.status === "error") return Boolean(valor);
  return valor.status === "ready" && valor.detail.loading === false && "startMs" in valor.detail;
}"""

CONTROL_FETCH = """async ({url, method, body, header}) => {
  const init = {method, headers: {[header]: "1"}};
  if (body !== null) { init.body = body; init.headers["content-type"] = "application/json"; }
  const response = await fetch(url, init);
  return {status: response.status, text: await response.text()};
}"""


class FrontEndError(RuntimeError):
    """The site did not start, or an override could not be mounted; the message says why."""


def build_for_tests(
    manifest: str | PathLike[str], site: str | PathLike[str] | None, base: str, folder: Path
) -> Path:
    """Build ``manifest`` with ``site`` into ``folder/dist`` for tests and return it.

    The manifest's folder is copied with the inline-handler plug-in beside it (the registry
    mounts only files shipped inside that folder); plug-ins outside the folder keep their
    place. The build's caches make every build after the first a copy of files.
    """
    manifest = Path(manifest).resolve()
    source_dir = manifest.parent
    plugins = folder / "plugins"
    shutil.copytree(
        source_dir,
        plugins,
        ignore=lambda _, names: [n for n in names if n in COPY_SKIPS or n.startswith(".")],
    )
    data = json.loads(manifest.read_text(encoding="utf-8"))
    for entry in data.get("plugins", []):
        path = entry.get("path") if isinstance(entry, dict) else None
        if isinstance(path, str) and not (plugins / path).resolve().is_relative_to(plugins):
            entry["path"] = str((source_dir / path).resolve())  # outside: where it is
        elif isinstance(path, str) and not (plugins / path).exists():
            entry["path"] = str((source_dir / path).resolve())  # in a folder not copied
    data.pop("site", None)  # given to the build explicitly
    copied = plugins / manifest.name
    copied.write_text(json.dumps(data, indent=2))
    inline = plugins / INLINE_PLUGIN
    inline.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("inline_plugin.py"), inline)
    dist = folder / "dist"
    build(copied, dist, base=base, quiet=True, site=site)
    return dist


def site_of(manifest: str | PathLike[str]) -> Path | None:
    """The manifest's ``"site"`` folder, if it names one."""
    return load_manifest(manifest).site


class SiteServer:
    """A built site served on 127.0.0.1 by a static server in a thread."""

    HOST = "127.0.0.1"

    def __init__(self, dist: Path, base: str, manifest: Path) -> None:
        self.dist = dist
        self.manifest = manifest.resolve()
        plugins = load_manifest(self.manifest).plugins
        self.needs_workers = any(plugin.type in KINDS_IN_WORKERS for plugin in plugins)
        self._server = serve(dist, base)
        self.base: str = self._server.base
        port = self._server.server_address[1]
        self.url = f"http://{self.HOST}:{port}{self.base}"  # ends with the base
        self.origin = self.url[: -len(self.base)]
        bundle = json.loads((dist / "valor-bundle.json").read_text())
        self.assets = {self.base + name for name in bundle["assets"]} | {self.base}
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass(frozen=True)
class Recorded:
    """A request the page made that Valor answered (or that nothing handled)."""

    method: str
    url: str
    path: str  # relative to the site's base, with the query: "api/todos?done=1"
    status: int | None  # None: the request failed without an answer
    plugin: str | None  # x-valor-plugin: which plug-in answered
    correlation_id: str | None

    def __str__(self) -> str:
        answered = f"{self.status}" if self.status is not None else "no answer"
        return f"{self.method} {self.url} -> {answered}"


@dataclass
class ValorAPI:
    """What a test holds beside its page (the ``valor_api`` fixture): overrides of plug-ins for
    this test, and the requests the page made."""

    page: Any  # playwright's sync Page
    site: SiteServer
    url: str = ""
    """Where the site is for this page (default ``site.url``)."""
    requests: list[Recorded] = field(default_factory=list)
    """Every request of the page that Valor answered, in order."""
    unhandled: list[Recorded] = field(default_factory=list)
    """Requests no plug-in and no file of the site answered (or to another origin)."""

    def __post_init__(self) -> None:
        self.url = self.url or self.site.url
        self.origin = self.url[: -len(self.site.base)]

    def watch(self) -> None:
        """Record the page's requests from now on."""
        self.page.on("response", self._on_response)
        self.page.on("requestfailed", self._on_failed)

    def open(self, path: str = "", timeout_ms: float = BOOT_MS) -> None:
        """Go to ``path`` (relative to the site's base) and wait until its runtime is ready:
        every plug-in loaded and this test's overrides mounted."""
        self.page.goto(self.url + path.lstrip("/"))
        self.wait_until_ready(timeout_ms)

    def wait_until_ready(self, timeout_ms: float = BOOT_MS) -> None:
        """Wait until the page's Valor runtime is ready (after a reload, say)."""
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            self.page.wait_for_function(READY, timeout=timeout_ms)
        except PlaywrightTimeout:
            raise FrontEndError(
                f"the page {self.page.url} did not start Valor within {timeout_ms / 1000:.0f} s:"
                " does it call Valor.start() (see docs/deploying.md)?"
            ) from None
        state = self.page.evaluate("() => ({status: Valor.status, error: Valor.detail.error})")
        if state["status"] == "error":
            raise FrontEndError(f"Valor did not start in {self.page.url}: {state['error']}")

    # -- overrides ------------------------------------------------------------------------------

    def use(
        self,
        name: str,
        handler: Callable[..., Any] | str | PathLike[str],
        *,
        prefix: str | None = None,
        kind: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Mount ``handler`` as plug-in ``name`` for this test, replacing the plug-in of that
        name if there is one (at its prefix, unless ``prefix`` says another). ``handler`` is a
        function, whose source runs in the browser (so it may use only its arguments and
        what it imports itself), or a plug-in file: one in the manifest's folder mounts as
        it is (python, js or wasm), a Python file elsewhere runs as an inline module.
        Returns the definition ``/_plugins`` answered. Requests from now on see it; a reload
        keeps it; the next test starts without it."""
        definition: dict[str, Any] = {"name": name}
        if callable(handler):
            if handler.__name__ == "<lambda>":
                raise FrontEndError(f"override {name!r}: write the handler with def, not lambda")
            source = textwrap.dedent(inspect.getsource(handler))
            compile(source, f"<override {name}>", "exec")  # a SyntaxError shows here, not later
            definition |= {"type": "python", "path": INLINE_PLUGIN}
            definition["config"] = {"source": source, "handler": handler.__name__}
        else:
            definition |= self._file_definition(name, Path(handler), kind, config)
        current = self._call("GET", f"_plugins/{name}")
        replaced = json.loads(current["text"]) if current["status"] == 200 else None
        if replaced is not None:
            definition["prefix"] = prefix or replaced["prefix"]
            removed = self._call("DELETE", f"_plugins/{name}")
            if removed["status"] != 200:
                raise FrontEndError(f"could not take out plug-in {name!r}: {removed['text']}")
        elif prefix is not None:
            definition["prefix"] = prefix
        added = self._call("POST", "_plugins", definition)
        if added["status"] != 201:
            if replaced is not None:  # the test goes on with the plug-in it had
                self._call("POST", "_plugins", replaced)
            raise FrontEndError(f"could not mount the override {name!r}: {added['text']}")
        return json.loads(added["text"])

    def remove(self, name: str) -> None:
        """Take plug-in ``name`` out for this test: its prefix then answers 404 (unhandled)."""
        removed = self._call("DELETE", f"_plugins/{name}")
        if removed["status"] != 200:
            raise FrontEndError(f"could not take out plug-in {name!r}: {removed['text']}")

    def _file_definition(
        self, name: str, path: Path, kind: str | None, config: dict[str, Any] | None
    ) -> dict[str, Any]:
        path = path.resolve()
        if not path.is_file():
            raise FrontEndError(f"override {name!r}: no such file {str(path)!r}")
        source_dir = self.site.manifest.parent
        if path.is_relative_to(source_dir):
            kind = kind or KINDS_BY_SUFFIX.get(path.suffix)
            if kind is None:
                raise FrontEndError(f"override {name!r}: say its kind (kind='wasi', ...)")
            relative = path.relative_to(source_dir).as_posix()
            return {"type": kind, "path": relative, "config": config or {}}
        if path.suffix != ".py" or kind not in (None, "python"):
            raise FrontEndError(
                f"override {name!r}: {str(path)!r} is outside the manifest's folder "
                f"({source_dir}), so it is not in the bundle; only a Python file can come from "
                "elsewhere (as an inline module)"
            )
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
        return {"type": "python", "path": INLINE_PLUGIN, "config": {"source": source}}

    def _call(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        return self.page.evaluate(
            CONTROL_FETCH,
            {
                "url": self.url + path,
                "method": method,
                "body": None if body is None else json.dumps(body),
                "header": CONTROL_HEADER,
            },
        )

    # -- what the page asked --------------------------------------------------------------------

    def _on_response(self, response: Any) -> None:
        request = response.request
        if request.headers.get(CONTROL_HEADER):
            return
        url = request.url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.unhandled.append(self._record(request, response))
            return
        if parts.path in self.site.assets:
            return  # one of the site's files
        if response.from_service_worker:
            headers = response.headers
            recorded = self._record(request, response)
            self.requests.append(recorded)
            if recorded.status == 404 and "x-valor-plugin" not in headers:
                self.unhandled.append(recorded)  # the runtime's own 404: no plug-in there
        elif response.status == 404 and parts.path != "/favicon.ico":
            self.unhandled.append(self._record(request, response))

    def _on_failed(self, request: Any) -> None:
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https") and (
            f"{parts.scheme}://{parts.netloc}" != self.origin
        ):
            self.unhandled.append(self._record(request, None))

    def _record(self, request: Any, response: Any) -> Recorded:
        headers = response.headers if response is not None else {}
        parts = urlsplit(request.url)
        base = self.site.base
        relative = parts.path[len(base) :] if parts.path.startswith(base) else parts.path
        path = relative + (f"?{parts.query}" if parts.query else "")
        return Recorded(
            method=request.method,
            url=request.url,
            path=path,
            status=response.status if response is not None else None,
            plugin=headers.get("x-valor-plugin"),
            correlation_id=headers.get("x-correlation-id"),
        )

    def unhandled_message(self) -> str:
        """What a test whose page made unhandled requests fails with."""
        lines = "\n".join(f"  {request}" for request in self.unhandled)
        return (
            f"the page made {len(self.unhandled)} request(s) that no plug-in handled:\n{lines}\n"
            "Mount a plug-in there (valor_api.use(...)), or let them through with the "
            "valor_unhandled_requests ini option or @pytest.mark.valor_unhandled_requests('warn')"
            " ('warn' or 'bypass')."
        )
