"""Streamed answers in the browser, read by a page as any script would (``fetch`` and a body
reader): the service worker answers with a ``ReadableStream`` that pulls each part from the
runtime worker as the page reads it. Events arrive before the last is produced, a 50 MB
download arrives byte-exact while the worker's memory stays flat, a reader that cancels closes
the plug-in's generator, and an error in the middle of a stream errors the page's reader."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Page

from tests.browser.conftest import Site, browser_send, fetch
from tests.cases import Case, compare_cases
from tests.servers import Server, http_send

pytestmark = pytest.mark.browser
MB = 1024 * 1024

READ_HELD = """async ({stream, release}) => {
  const response = await fetch(stream);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  // The last part is held until the release below: a host that buffered would stall here.
  while (!text.includes("1\\n")) {
    const part = await reader.read();
    if (part.done) return {beforeRelease: text, text, ended: "before the release"};
    text += decoder.decode(part.value);
  }
  const beforeRelease = text;
  await fetch(release, {method: "POST"});
  for (let part = await reader.read(); !part.done; part = await reader.read()) {
    text += decoder.decode(part.value);
  }
  return {beforeRelease, text, type: response.headers.get("content-type")};
}"""

READ_PATTERN = """async (url) => {
  // Checks every byte against the download's pattern as it arrives, keeping none of them.
  const response = await fetch(url);
  const reader = response.body.getReader();
  let offset = 0, wrong = 0, parts = 0;
  const started = performance.now();
  for (let part = await reader.read(); !part.done; part = await reader.read()) {
    const bytes = part.value;
    for (let i = 0; i < bytes.length; i++, offset++) {
      if (bytes[i] !== ((offset % 65536) + (Math.floor(offset / 65536) % 256)) % 256) wrong++;
    }
    parts++;
  }
  return {size: offset, wrong, parts, ms: performance.now() - started};
}"""

READ_THEN_CANCEL = """async (url) => {
  const reader = (await fetch(url)).body.getReader();
  const part = await reader.read();
  const first = part.done ? "" : new TextDecoder().decode(part.value);
  await reader.cancel();
  return first;
}"""

READ_UNTIL_ERROR = """async (url) => {
  const response = await fetch(url);
  const reader = response.body.getReader();
  let text = "";
  try {
    for (let part = await reader.read(); !part.done; part = await reader.read()) {
      text += new TextDecoder().decode(part.value);
    }
  } catch (error) {
    return {status: response.status, text, error: String(error)};
  }
  return {status: response.status, text, error: null};
}"""


def stats(page: Page, site: Site) -> dict:
    return fetch(page, site.url + "events/stats").json()


def test_the_first_part_arrives_before_the_last_is_produced(runtime_page: Page, site: Site) -> None:
    # A streaming ASGI app (Starlette) does the same: tests/browser/test_asgi.py.
    stream, release = "events?count=3&every=0&hold=1", "events/release"
    result = runtime_page.evaluate(
        READ_HELD, {"stream": site.url + stream, "release": site.url + release}
    )
    assert "3" not in result["beforeRelease"], result
    assert result["text"].count("\n") >= 3 and "3" in result["text"], result
    assert result["type"].startswith("text/event-stream")


def test_a_50_mb_download_arrives_byte_exact_with_worker_memory_flat(
    runtime_page: Page, site: Site
) -> None:
    before = fetch(runtime_page, site.url + "download/memory").json()["peak_bytes"]
    result = runtime_page.evaluate(READ_PATTERN, site.url + "download?mb=50")
    assert result["size"] == 50 * MB and result["wrong"] == 0, result
    after = fetch(runtime_page, site.url + "download/memory").json()["peak_bytes"]
    # Pyodide's WebAssembly memory only grows: had the worker held the download, it would
    # have grown by 50 MB at least.
    assert after - before < 16 * MB, f"worker memory grew {(after - before) / MB:.1f} MB"


def test_a_reader_that_cancels_closes_the_generator(runtime_page: Page, site: Site) -> None:
    closed_before = stats(runtime_page, site)["closed"]
    first = runtime_page.evaluate(READ_THEN_CANCEL, site.url + "events?count=0&every=0.05")
    assert first.startswith("id: 1\n"), first
    deadline = time.monotonic() + 5
    while stats(runtime_page, site) != {"open": 0, "closed": closed_before + 1}:
        assert time.monotonic() < deadline, stats(runtime_page, site)
        time.sleep(0.05)


def test_an_error_mid_stream_errors_the_pages_reader(runtime_page: Page, site: Site) -> None:
    result = runtime_page.evaluate(READ_UNTIL_ERROR, site.url + "events?count=5&every=0&fail=2")
    assert result["status"] == 200 and result["text"].count("event: tick") == 2, result
    assert result["error"] is not None, result
    assert fetch(runtime_page, site.url + "events?count=1").status == 200


def test_a_streamed_answer_is_the_same_in_both_hosts(
    runtime_page: Page, site: Site, server: Server
) -> None:
    # Status, reason, every header (x-valor-host included, with each host's name) and body.
    events = Case("events-stream", "GET", "/events?count=2&every=0", 200, plugin="events")
    sends = (http_send(server.url), browser_send(runtime_page, site))
    compare_cases(*sends, (server.url, site.url.rstrip("/")), [events])
