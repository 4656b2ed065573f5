"""The request table for ``tests/parity/plugins``: each difference once seen between the hosts,
as a case both must answer alike (the browser test also compares their answers in full)."""

from __future__ import annotations

import json

from tests.cases import TEXT, Answer, Case


def _answer(case_id: str, wanted: dict, status: int, **checks) -> Case:
    """A case for the ``answer`` plug-in, which answers what the body describes."""
    body = json.dumps(wanted).encode()
    return Case(case_id, "POST", "/answer", status, body=body, plugin="answer", **checks)


def _invalid(case_id: str, wanted: dict, detail: str) -> Case:
    return _answer(case_id, wanted, 500, detail_contains=detail,
                   json_subset={"error": "Internal Server Error"})  # fmt: skip


def _seen(**expected):
    def check(answer: Answer) -> None:
        seen = answer.json()
        for key, value in expected.items():
            assert seen[key] == value, f"{key}: {seen[key]!r} != {value!r}"

    return check


def _repeats(answer: Answer) -> None:
    assert answer.headers.getlist("x-multi") in (["1", "2"], ["1, 2"]), answer.headers


PARITY_CASES: list[Case] = [
    _answer("reason-422", {"status": 422}, 422),
    _answer("reason-unknown", {"status": 299, "body": "x"}, 299, text="x"),
    _answer("head-get", {"body": "a body"}, 200, text="a body"),
    Case("head", "HEAD", "/request/x", 200, plugin="request", text="",
         expect_headers={"content-type": "application/json"}),
    Case("head-js", "HEAD", "/js-echo", 200, plugin="js-echo", text=""),
    Case("decoded-path", "GET", "/request/caf%C3%A9/a%20b?q=%C3%A9", 200, plugin="request",
         extra=_seen(path="/café/a b", query=[["q", "é"]])),
    # "/request/deep" is a mount of its own; an encoded slash is no separator, in both hosts.
    Case("slash", "GET", "/request/deep/x", 200, plugin="request-deep", extra=_seen(path="/x")),
    Case("encoded-slash", "GET", "/request/deep%2Fx", 200, plugin="request",
         extra=_seen(path="/deep/x")),
    Case("encoded-question-mark", "GET", "/request/a%3Fb=1", 200, plugin="request",
         extra=_seen(path="/a?b=1", query=[])),
    Case("encoded-hash", "GET", "/request/a%23?b=1", 200, plugin="request",
         extra=_seen(path="/a#", query=[["b", "1"]])),
    _answer("own-correlation-id", {"headers": [["x-correlation-id", "mine"]]}, 200,
            headers={"x-request-id": "r-1"}),
    _answer("repeated-headers",
            {"headers": [["x-multi", "1"], ["link", "</a>"], ["x-multi", "2"]]}, 200,
            extra=_repeats),
    Case("put-no-body", "PUT", "/echo", 200, plugin="echo", extra=_seen(body=None)),
    Case("post-empty-body", "POST", "/echo", 200, body=b"", plugin="echo",
         extra=_seen(body=None)),
    Case("js-arraybuffer", "POST", "/js-echo", 200, body=b"\x07abc", plugin="js-echo",
         extra=_seen(bodyType="[object ArrayBuffer]", bodyLength=4, firstByte=7)),
    Case("helper-module", "GET", "/helper", 200, plugin="helper",
         text="Hello from a helper module", expect_headers={"content-type": TEXT}),
    _invalid("204-with-body", {"status": 204, "body": "oops"}, "a 204 answer cannot have a body"),
    _invalid("status-101", {"status": 101}, "status 101 is not a final HTTP status"),
    _invalid("value-past-latin1", {"headers": [["x-price", "10 €"]]}, "cannot carry"),
    _invalid("value-with-crlf", {"headers": [["x-split", "a\r\nb: c"]]}, "cannot carry"),
    _invalid("bad-name", {"headers": [["bad name", "v"]]}, "is not a valid HTTP field name"),
    _answer("value-trimmed", {"headers": [["x-pad", " v "]]}, 200,
            expect_headers={"x-pad": "v"}),
]  # fmt: skip
