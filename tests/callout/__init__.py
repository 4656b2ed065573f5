"""Plug-ins calling out (``valor.client``): the test plug-ins' manifest and the table of
requests both hosts must answer alike. ``upstream`` is the real server they call."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.cases import Answer, Case

PLUGINS = Path(__file__).resolve().parent / "plugins"
EXAMPLES = Path(__file__).resolve().parent.parent.parent / "plugins"


def callout_manifest(folder: Path, upstream: str, closed: str) -> Path:
    """``tests/callout/plugins`` copied into ``folder``, calling ``upstream``; ``closed`` is
    a URL on 127.0.0.1 that nothing listens on."""
    shutil.copytree(PLUGINS, folder, dirs_exist_ok=True)
    manifest = json.loads((folder / "plugins.json").read_text())
    manifest["plugins"][0]["config"] = {"upstream": upstream, "closed": closed}
    (folder / "plugins.json").write_text(json.dumps(manifest))
    return folder / "plugins.json"


def example_manifest(folder: Path, upstream: str) -> Path:
    """``plugins/callout.json`` (the example ``digest`` and its sibling ``greeter``) copied
    into ``folder``, its news coming from ``upstream``."""
    shutil.copytree(EXAMPLES, folder, ignore=shutil.ignore_patterns("build", "src", "__pycache__"))
    manifest = json.loads((folder / "callout.json").read_text())
    digest = manifest["plugins"][1]
    digest["config"]["news"] = upstream + "news.json"
    digest["outbound"]["allow"] = [upstream.split("/")[2]]
    (folder / "callout.json").write_text(json.dumps(manifest))
    return folder / "callout.json"


def _seen(answer: Answer) -> dict:
    return answer.json()


def _upstream_answer(answer: Answer) -> None:
    seen = _seen(answer)
    headers = dict(seen["headers"])
    assert (seen["status"], seen["reason"]) == (200, "OK"), seen
    assert seen["body"] == "the upstream's answer\n", seen
    # As fetch() shows them in both hosts: sorted, a repeated name's values joined.
    assert headers["x-upstream"] == "one, two", seen
    assert [name for name, _ in seen["headers"]] == sorted(headers), seen


def _posted(answer: Answer) -> None:
    seen = _seen(answer)
    expected = {"method": "POST", "body": "posted", "x-test": "t", "cookie": None}
    assert json.loads(seen["body"]) == expected, seen


def _no_cookie_kept(answer: Answer) -> None:
    seen = _seen(answer)
    assert json.loads(seen["body"])["cookie"] is None, seen


def _inside(seen: dict) -> None:
    """The runtime answered the call itself: a host's answer over the network, the server's
    or the service worker's, would name the host (x-valor-host)."""
    assert "x-valor-host" not in dict(seen["headers"]), seen


def _sibling_answer(answer: Answer) -> None:
    seen = _seen(answer)
    _inside(seen)
    headers = dict(seen["headers"])
    correlation_id = answer.headers["x-correlation-id"]
    # The sibling's answer carries the caller's correlation id, and so did its request.
    assert headers["x-correlation-id"] == correlation_id, seen
    assert headers["x-valor-plugin"] == "echo", seen
    got = json.loads(seen["body"])
    assert ["x-request-id", correlation_id] in got["headers"], got
    assert ["x-test", "sibling"] in got["headers"], got
    assert got["url"].endswith("/below?q=1"), got


def _own_origin_answer(answer: Answer) -> None:
    _inside(_seen(answer))
    got = json.loads(_seen(answer)["body"])
    assert (got["method"], got["body"]) == ("POST", "body"), got
    assert got["url"].endswith("/own"), got


def _worker_answer(answer: Answer) -> None:
    got = answer.json()
    assert ["x-request-id", answer.headers["x-correlation-id"]] in got["headers"], got


CALLOUT_CASES = [
    Case("at-load", "GET", "/caller/at-load", 200, plugin="caller",
         json_subset={"at_load": {"headline": "Valor calls out"}}),
    Case("answer", "GET", "/caller/answer", 200, plugin="caller", extra=_upstream_answer),
    Case("post", "POST", "/caller/post", 200, body=b"posted", plugin="caller", extra=_posted),
    Case("no-cookie-kept", "GET", "/caller/cookie-kept", 200, plugin="caller",
         extra=_no_cookie_kept),
    Case("sibling", "GET", "/caller/sibling", 200, plugin="caller", extra=_sibling_answer),
    Case("sibling-stream", "GET", "/caller/sibling-stream", 200, plugin="caller",
         json_subset={"parts": ["tick 1\n", "tick 2\n", "tick 3\n"]}),
    Case("sibling-stream-broken", "GET", "/caller/sibling-stream?fail=1", 502,
         plugin="caller", json_subset={"error": "ReadError", "read_error": True},
         extra=lambda a: _names(a, "plug-in 'ticker'"), varies=r"error_id=[0-9a-f]{12}"),
    Case("sibling-timeout", "GET", "/caller/sibling-slow?t=0.2", 502, plugin="caller",
         json_subset={"error": "ReadTimeout", "timeout": True,
                      "message": "plug-in at '/caller/hang' did not answer within 0.2 s"}),
    Case("own-origin", "GET", "/caller/own-origin", 200, plugin="caller",
         extra=_own_origin_answer),
    Case("worker", "GET", "/worker/", 200, plugin="worker", extra=_worker_answer),
    Case("asgi", "GET", "/app/", 200, plugin="app", extra=_worker_answer),
    Case("loop", "GET", "/caller/loop", 508, plugin="caller",
         detail_contains="plug-in calls nest deeper than 8: caller -> caller -> caller"),
    Case("refused", "GET", "/caller/refused", 502, plugin="caller",
         json_subset={"error": "CallRefused", "connect_error": True},
         extra=lambda a: _names(a, "localhost", "outbound.allow")),
    Case("too-large", "GET", "/caller/big?size=100001", 502, plugin="caller",
         json_subset={"error": "AnswerTooLarge", "read_error": True},
         extra=lambda a: _names(a, "100000 bytes", "limits.response_bytes")),
    Case("too-large-as-read", "GET", "/caller/big-chunked?size=100001", 502, plugin="caller",
         json_subset={"error": "AnswerTooLarge", "read_error": True},
         extra=lambda a: _names(a, "100000 bytes", "limits.response_bytes")),
    Case("within-limit-as-read", "GET", "/caller/big-chunked?size=100000", 200,
         plugin="caller"),
    Case("within-limit", "GET", "/caller/big?size=100000", 200, plugin="caller"),
    Case("unreachable", "GET", "/caller/unreachable", 502, plugin="caller",
         json_subset={"error": "ConnectError", "connect_error": True}),
    Case("call-timeout", "GET", "/caller/slow?t=0.2", 502, plugin="caller",
         json_subset={"error": "ReadTimeout", "timeout": True}),
]  # fmt: skip

# Messages that come from each host's own network stack (httpx's or the browser's).
NOT_COMPARED = {"unreachable", "call-timeout"}


def _names(answer: Answer, *words: str) -> None:
    message = answer.json()["message"]
    for word in words:
        assert word in message, message
