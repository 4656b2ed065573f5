"""Plug-ins call out in the browser as on the server: the same plug-ins, calling the same real
upstream on 127.0.0.1 (through the runtime worker's ``fetch``) and each other (inside the
runtime), give the same answers in both hosts, compared in full."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page

from tests.browser.conftest import Site, fetch, site_for, start_page
from tests.browser.test_asgi import browser_send_with_reason
from tests.callout import CALLOUT_CASES, NOT_COMPARED, callout_manifest, example_manifest
from tests.callout.upstream import Upstream, upstream
from tests.cases import Case, compare_cases
from tests.servers import Server, http_send, valor_server
from valor.processes import free_port

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def calling_upstream() -> Iterator[Upstream]:
    with upstream() as running:
        yield running


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory, calling_upstream: Upstream):
    folder = tmp_path_factory.mktemp("callout") / "plugins"
    return callout_manifest(folder, calling_upstream.url, f"http://127.0.0.1:{free_port()}/")


@pytest.fixture(scope="module")
def callout_server(manifest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with valor_server(manifest, log_dir=tmp_path_factory.mktemp("callout-log")) as running:
        yield running


@pytest.fixture(scope="module")
def callout_site(tmp_path_factory: pytest.TempPathFactory, manifest) -> Iterator[Site]:
    """The test plug-ins bundled, httpx's wheels included (their ``requirements``)."""
    yield from site_for(tmp_path_factory, "/", manifest)


@pytest.fixture(scope="module")
def callout_page(browser: Browser, callout_site: Site) -> Iterator[Page]:
    context = browser.new_context()
    try:
        yield start_page(context, callout_site.url)
    finally:
        context.close()


@pytest.mark.timeout(600)
def test_plugins_call_out_and_each_other_the_same_in_both_hosts(
    callout_page: Page, callout_server: Server, callout_site: Site
) -> None:
    in_browser = browser_send_with_reason(callout_page, callout_site)
    origins = (callout_server.url, callout_site.url.rstrip("/"))
    compare_cases(http_send(callout_server.url), in_browser, origins, CALLOUT_CASES, NOT_COMPARED)


@pytest.mark.timeout(120)
def test_the_plugins_timeout_bounds_its_calls_out(callout_page: Page, callout_site: Site) -> None:
    answer = fetch(callout_page, callout_site.url + "caller/hang")
    assert answer.status == 504, answer.body
    assert answer.json()["detail"] == "plug-in 'caller' did not answer within 3 seconds"


READ_HELD = """async ({stream, release}) => {
  const response = await fetch(stream);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  // The upstream holds its second part until the release below: a host that read the whole
  // answer before passing it on would stall here.
  while (!text.includes("first part\\n")) {
    const part = await reader.read();
    if (part.done) return {beforeRelease: text, text};
    text += decoder.decode(part.value);
  }
  const beforeRelease = text;
  await fetch(release, {method: "POST"});
  for (let part = await reader.read(); !part.done; part = await reader.read()) {
    text += decoder.decode(part.value);
  }
  return {beforeRelease, text};
}"""


@pytest.mark.timeout(120)
def test_a_streamed_answer_is_read_part_by_part(
    callout_page: Page, callout_site: Site, calling_upstream: Upstream
) -> None:
    urls = {
        "stream": callout_site.url + "caller/stream",
        "release": calling_upstream.url + "release-stream",
    }
    result = callout_page.evaluate(READ_HELD, urls)
    assert result["beforeRelease"] == "first part\n", result
    assert result["text"] == "first part\nsecond part\n", result


@pytest.mark.timeout(120)
def test_a_header_fetch_may_not_send_is_an_error_naming_it(
    callout_page: Page, callout_site: Site, callout_server: Server
) -> None:
    answer = fetch(callout_page, callout_site.url + "caller/cookie").json()
    assert answer["error"] == "HeaderNotAllowed" and answer["request_error"], answer
    assert "'cookie' header (a forbidden request header)" in answer["message"], answer
    # The server's plug-in sends it.
    on_server = httpx.get(callout_server.url + "/caller/cookie", timeout=30)
    assert on_server.status_code == 200, on_server.text


@pytest.mark.timeout(600)
def test_the_example_answers_the_same_in_both_hosts(
    browser: Browser,
    tmp_path_factory: pytest.TempPathFactory,
    calling_upstream: Upstream,
) -> None:
    folder = tmp_path_factory.mktemp("example")
    manifest = example_manifest(folder / "plugins", calling_upstream.url)
    case = Case("digest", "GET", "/digest?who=Bob", 200, plugin="digest",
                json_subset={"greeting": "Alice says hello Bob!"})  # fmt: skip
    context = browser.new_context()
    try:
        with valor_server(manifest, log_dir=folder) as server:
            for site in site_for(tmp_path_factory, "/", manifest):
                page = start_page(context, site.url)
                in_browser = browser_send_with_reason(page, site)
                origins = (server.url, site.url.rstrip("/"))
                compare_cases(http_send(server.url), in_browser, origins, [case])
    finally:
        context.close()


@pytest.mark.timeout(120)
def test_an_upstream_that_does_not_allow_the_site_is_a_connect_error_naming_cors(
    callout_page: Page, callout_site: Site, callout_server: Server
) -> None:
    answer = fetch(callout_page, callout_site.url + "caller/no-cors").json()
    assert answer["error"] == "ConnectError" and answer["connect_error"], answer
    assert "CORS: its answer needs Access-Control-Allow-Origin" in answer["message"], answer
    # The server's plug-in reads it.
    on_server = httpx.get(callout_server.url + "/caller/no-cors", timeout=30)
    assert on_server.json()["body"] == "for servers only\n", on_server.text


WITHOUT_HTTPX = """from valor import vlugin


def on_create(ctx):
    pass


@vlugin
async def on_request(ctx, req):
    try:
        ctx.http
    except RuntimeError as exc:
        return str(exc)
    return "ctx.http was there"
"""


@pytest.mark.timeout(600)
def test_a_bundle_without_httpx_says_to_list_it(
    browser: Browser, tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder = tmp_path_factory.mktemp("no-httpx")
    (folder / "lonely.py").write_text(WITHOUT_HTTPX)
    manifest = folder / "plugins.json"
    manifest.write_text('{"plugins": [{"name": "lonely", "type": "python", "path": "lonely.py"}]}')
    context = browser.new_context()
    try:
        for site in site_for(tmp_path_factory, "/", manifest):
            page = start_page(context, site.url)
            answer = fetch(page, site.url + "lonely").body.decode()
            assert answer == (
                "plug-in 'lonely' calls out, which needs httpx: add \"httpx\" to its "
                '"requirements" in the manifest (a browser bundle ships only what they list)'
            )
    finally:
        context.close()
