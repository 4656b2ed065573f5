"""The shared request table, per plug-in kind: every kind's example answers the same requests
the same way (only ``x-valor-plugin`` differs), and fails the same way when it misbehaves.

Mounts the hosts use: ``/<kind>`` is the kind's example from ``plugins/`` and
``/<kind>-faulty`` the test fixture (timeout 2 s). Runs against any host with ``run_cases``.
"""

from __future__ import annotations

from tests.cases import TEXT, Answer, Case

KINDS = ("js", "wasm", "wasi", "native", "proxy")
BROWSER_KINDS = ("js", "wasm", "wasi", "proxy")
BINARY = bytes(range(256)) * 64
MAX_BODY = 64 * 1024
FAULTY_TIMEOUT = 2

# A wasm or WASI trap is the plug-in's own error (500, fresh instance next time); a worker or
# process that dies is a crash (502, restarted); an upstream that is down is a bad gateway.
CRASH_STATUS = {"js": 502, "wasm": 500, "wasi": 500, "native": 502, "proxy": 502}


def _same_bytes(expected: bytes):
    def check(answer: Answer) -> None:
        assert answer.body == expected, f"{len(answer.body)} bytes differ from {len(expected)}"

    return check


def hello_cases(kind: str, name: str | None = None, prefix: str | None = None) -> list[Case]:
    """The example's answers: hello (GET and HEAD), echo (text and binary), no route, correlation
    id."""
    name = name or kind
    p = prefix or f"/{kind}"
    return [
        Case(f"{name}-hello", "GET", p, 200, plugin=name, text="Hello Plugin!",
             expect_headers={"content-type": TEXT}),
        Case(f"{name}-hello-slash", "GET", p + "/", 200, plugin=name, text="Hello Plugin!"),
        Case(f"{name}-head", "HEAD", p, 200, plugin=name, text="",
             expect_headers={"content-type": TEXT}),
        Case(f"{name}-correlation-id", "GET", p, 200, headers={"x-request-id": f"{name}-42"},
             plugin=name, text="Hello Plugin!"),
        Case(f"{name}-echo", "POST", p + "/echo", 200, headers={"content-type": "text/x-demo"},
             body="héllo".encode(), plugin=name, text="héllo",
             expect_headers={"content-type": "text/x-demo"}),
        Case(f"{name}-echo-binary", "POST", p + "/echo", 200,
             headers={"content-type": "application/octet-stream"}, body=BINARY, plugin=name,
             expect_headers={"content-type": "application/octet-stream"},
             extra=_same_bytes(BINARY)),
        Case(f"{name}-no-route", "GET", p + "/nope?x=1", 404, plugin=name,
             json_subset={"error": "no route", "path": "/nope"}),
    ]  # fmt: skip


def failure_cases(kind: str) -> list[Case]:
    """Crash and hang: each answered clearly, and the plug-in serves again."""
    faulty = f"{kind}-faulty"
    crash_path, crash_plugin = (
        ("/proxy-down", "proxy-down") if kind == "proxy" else (f"/{faulty}/crash", faulty)
    )
    return [
        Case(f"{kind}-crash", "GET", crash_path, CRASH_STATUS[kind], plugin=crash_plugin,
             json_subset={"status": CRASH_STATUS[kind]}, detail_contains=repr(crash_plugin)),
        Case(f"{kind}-after-crash", "GET", f"/{faulty}", 200, plugin=faulty,
             text="Hello Plugin!"),
        Case(f"{kind}-hang", "GET", f"/{faulty}/hang", 504, plugin=faulty,
             detail_contains=f"did not answer within {FAULTY_TIMEOUT} seconds"),
        Case(f"{kind}-after-hang", "GET", f"/{faulty}", 200, plugin=faulty,
             text="Hello Plugin!"),
    ]  # fmt: skip


def kind_cases(kind: str) -> list[Case]:
    return hello_cases(kind) + failure_cases(kind)
