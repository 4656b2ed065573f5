"""The plug-in-level store table: every store operation through a plug-in (``store/kv.py``),
in order, on an empty store. Each host's answers are checked and compared in full: the same
values, versions, cursors and error messages from the server's store and the browser's.

Each host hands out versions of its own (the server counts, the browser's IndexedDB takes them
from a clock per tab), so a host's answers name each version by the order it first appears in
them (``version(n)``, ``Labelled``), and the requests that give one back (checks) are sent with
that host's own. Compared then: which answers show the same version, and that both hosts'
versions sort alike; two servers must show the very same versions.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from tests.cases import Answer, Case, SendFunction, compare_cases

STORE_MANIFEST = Path(__file__).parent / "store" / "plugins.json"


def version(label: int) -> str:
    """The ``label``-th distinct version the table's answers show (see ``Labelled``)."""
    return f"<version {label}>"


VERSION = re.compile(rb'"(\d{20})"')
LABEL = re.compile(rb"<version (\d+)>")


class Labelled:
    """A host's send function whose answers name versions by order of first appearance
    (``version(n)``), and whose requests carry the host's own version for each label."""

    def __init__(self, send: SendFunction) -> None:
        self.send = send
        self.labels: dict[bytes, int] = {}  # a version as the host wrote it -> its label

    def __call__(self, case: Case) -> Answer:
        if case.body is not None:
            case = replace(case, body=LABEL.sub(self._version, case.body))
        answer = self.send(case)
        return replace(answer, body=VERSION.sub(self._label, answer.body))

    def order(self) -> list[int]:
        """The labels, their versions sorted."""
        return [self.labels[found] for found in sorted(self.labels, key=int)]

    def _label(self, match: re.Match[bytes]) -> bytes:
        label = self.labels.setdefault(match[1], len(self.labels) + 1)
        return b'"' + version(label).encode() + b'"'

    def _version(self, match: re.Match[bytes]) -> bytes:
        wanted = int(match[1])
        for found, label in self.labels.items():
            if label == wanted:
                return found
        raise AssertionError(f"a request names {match[0]!r}, which no answer has shown yet")


def compare_store_cases(
    first: SendFunction,
    second: SendFunction,
    origins: tuple[str, str],
    *,
    same_versions: bool,
) -> None:
    """``compare_cases`` on the store table through ``Labelled`` hosts; their versions sort
    alike, and are the very same ones with ``same_versions`` (two servers)."""
    one, two = Labelled(first), Labelled(second)
    compare_cases(one, two, origins, STORE_CASES)
    assert one.order() == two.order(), (one.labels, two.labels)
    if same_versions:
        assert one.labels == two.labels


def _equals(expected: Any):
    def check(answer: Answer) -> None:
        assert answer.json() == expected, answer.body[:500]

    return check


def op(
    case_id: str, request: dict[str, Any], expected: Any, status: int = 200, plugin: str = "kv"
) -> Case:
    """``POST /<plugin>`` with ``request``: a 200 answering ``expected``, or an error whose
    detail contains ``expected``."""
    body = json.dumps(request).encode()
    headers = {"content-type": "application/json"}
    if status == 200:
        return Case(
            case_id, "POST", f"/{plugin}", 200, headers, body, plugin, extra=_equals(expected)
        )
    return Case(
        case_id, "POST", f"/{plugin}", status, headers, body, plugin,
        json_subset={"status": status}, detail_contains=expected,
    )  # fmt: skip


def entry(key: str, value: Any, label: int) -> dict[str, Any]:
    return {"key": key, "value": value, "version": version(label)}


RAW = b"\x00\xff raw \xc3"
RAW64 = base64.b64encode(RAW).decode()
ASTRAL = "note/😀"  # above U+FFFF: after U+FFFF in code-point order, before it in UTF-16's
BMP_HIGH = "note/\uffff"

STORE_CASES: list[Case] = [
    op("missing", {"op": "get", "key": "nothing"}, {"entry": None}),
    op(
        "set-json",
        {"op": "set", "key": "a", "value": {"x": [1, 2.5, "é"]}},
        {"version": version(1)},
    ),
    op("get-json", {"op": "get", "key": "a"}, {"entry": entry("a", {"x": [1, 2.5, "é"]}, 1)}),
    op("set-bytes", {"op": "set", "key": "raw", "bytes": RAW64}, {"version": version(2)}),
    op("get-bytes", {"op": "get", "key": "raw"}, {"entry": entry("raw", {"bytes": RAW64}, 2)}),
    op("overwrite", {"op": "set", "key": "a", "value": None}, {"version": version(3)}),
    op("get-null", {"op": "get", "key": "a"}, {"entry": entry("a", None, 3)}),
    op("increment-new", {"op": "increment", "key": "n"}, {"total": 1}),
    op("increment-by", {"op": "increment", "key": "n", "by": -11}, {"total": -10}),
    op("increment-text", {"op": "increment", "key": "raw"}, "NotAnInteger", 400),
    op("delete", {"op": "delete", "key": "a"}, {"deleted": "a"}),
    op("deleted", {"op": "get", "key": "a"}, {"entry": None}),
    op("delete-missing", {"op": "delete", "key": "never"}, {"deleted": "never"}),
    # Expired at once (1e-9 s is below the clock's resolution): the next request sees nothing.
    op(
        "set-expiring",
        {"op": "set", "key": "brief", "value": 1, "expire_in": 1e-9},
        {"version": version(4)},
    ),
    op("expired", {"op": "get", "key": "brief"}, {"entry": None}),
    op("set-astral", {"op": "set", "key": ASTRAL, "value": "astral"}, {"version": version(5)}),
    op("set-bmp-high", {"op": "set", "key": BMP_HIGH, "value": "bmp"}, {"version": version(6)}),
    op("set-note-10", {"op": "set", "key": "note/10", "value": 10}, {"version": version(7)}),
    op("set-note-9", {"op": "set", "key": "note/9", "value": 9}, {"version": version(8)}),
    op(
        "list-code-point-order",
        {"op": "list", "prefix": "note/"},
        {
            "entries": [
                entry("note/10", 10, 7),
                entry("note/9", 9, 8),
                entry(BMP_HIGH, "bmp", 6),
                entry(ASTRAL, "astral", 5),
            ],
            "cursor": None,
        },
    ),
    op(
        "list-page",
        {"op": "list", "prefix": "note/", "limit": 3},
        {
            "entries": [
                entry("note/10", 10, 7),
                entry("note/9", 9, 8),
                entry(BMP_HIGH, "bmp", 6),
            ],
            "cursor": base64.urlsafe_b64encode(BMP_HIGH.encode()).decode().rstrip("="),
        },
    ),
    op(
        "list-next-page",
        {
            "op": "list",
            "prefix": "note/",
            "limit": 3,
            "cursor": base64.urlsafe_b64encode(BMP_HIGH.encode()).decode().rstrip("="),
        },
        {"entries": [entry(ASTRAL, "astral", 5)], "cursor": None},
    ),
    op(
        "list-all",
        {"op": "list"},
        {
            "entries": [
                entry("n", -10, 9),
                entry("note/10", 10, 7),
                entry("note/9", 9, 8),
                entry(BMP_HIGH, "bmp", 6),
                entry(ASTRAL, "astral", 5),
                entry("raw", {"bytes": RAW64}, 2),
            ],
            "cursor": None,
        },
    ),
    op(
        "list-bad-cursor", {"op": "list", "prefix": "x/", "cursor": "bm90ZS8"}, "CursorInvalid", 400
    ),
    op("list-bad-limit", {"op": "list", "limit": 0}, "BatchInvalid", 400),
    op(
        "atomic-commits",
        {
            "op": "atomic",
            "checks": [["n", version(9)], ["fresh", None]],
            "mutations": [["set", "fresh", "yes"], ["increment", "n", 10], ["delete", "raw"]],
        },
        {"ok": True, "version": version(10)},
    ),
    op("atomic-wrote", {"op": "get", "key": "n"}, {"entry": entry("n", 0, 10)}),
    op(
        "atomic-stale",
        {"op": "atomic", "checks": [["n", version(9)]], "mutations": [["set", "n", 99]]},
        {"ok": False, "version": None},
    ),
    op(
        "atomic-not-absent",
        {"op": "atomic", "checks": [["fresh", None]], "mutations": [["set", "x", 1]]},
        {"ok": False, "version": None},
    ),
    op(
        "atomic-failed-increment-writes-nothing",
        {"op": "atomic", "mutations": [["set", "side", 1], ["increment", "fresh"]]},
        "NotAnInteger: cannot increment store key 'fresh'",
        400,
    ),
    op("atomic-nothing-written", {"op": "get", "key": "side"}, {"entry": None}),
    op(
        "atomic-checks-only",
        {"op": "atomic", "checks": [["fresh", version(10)]]},
        {"ok": True, "version": None},
    ),
    op("bad-version", {"op": "atomic", "checks": [["n", "12"]]}, "BatchInvalid", 400),
    op("key-empty", {"op": "get", "key": ""}, "KeyInvalid: a store key must not be empty", 400),
    op("key-too-long", {"op": "set", "key": "é" * 257, "value": 1}, "514 bytes", 400),
    op("key-nul", {"op": "get", "key": "a\u0000b"}, "NUL", 400),
    op(
        "value-too-large",
        {"op": "set", "key": "big", "value": "x" * 65536},
        "ValueTooLarge: the value for store key 'big'",
        400,
    ),
    op("bad-expiry", {"op": "set", "key": "e", "value": 1, "expire_in": -1}, "BatchInvalid", 400),
    # Namespaces: kv's own, and one that two plug-ins share by name.
    op(
        "shared-set",
        {"op": "set", "key": "a", "value": "common"},
        {"version": version(11)},
        plugin="kv-shared",
    ),
    op(
        "shared-seen",
        {"op": "get", "key": "a"},
        {"entry": entry("a", "common", 11)},
        plugin="kv-also-shared",
    ),
    op("own-not-shared", {"op": "get", "key": "a"}, {"entry": None}),
    # A worker-style module reaches the same store through its global ``store``.
    Case(
        "worker-style",
        "POST",
        "/counter",
        200,
        plugin="counter",
        extra=_equals({"messages": 1, "a": ["common", version(11)]}),
    ),
    Case(
        "worker-style-again",
        "POST",
        "/counter",
        200,
        plugin="counter",
        extra=_equals({"messages": 2, "a": ["common", version(11)]}),
    ),
    op(
        "worker-style-counted",
        {"op": "get", "key": "messages"},
        {"entry": entry("messages", 2, 12)},
        plugin="kv-also-shared",
    ),
]
