"""The shared request table, per plug-in kind: every kind's example answers the same requests
the same way (only ``x-valor-plugin`` differs), and fails the same way when it misbehaves.

Mounts the hosts use: ``/<kind>`` is the kind's example from ``plugins/`` and
``/<kind>-faulty`` the test fixture (timeout 2 s). Runs against any host with ``run_cases``.
"""

from __future__ import annotations

from tests.cases import TEXT, Answer, Case

SERVER_KINDS = ("js", "wasm", "wasi", "native", "proxy")
BROWSER_KINDS = ("js", "wasm", "wasi", "proxy")
# The Rust examples (plugins/src/*-rust/), one source built to both kinds: mount -> kind.
RUST_MOUNTS = {"rust-wasm": "wasm", "rust-native": "native"}
BROWSER_RUST_MOUNTS = ("rust-wasm",)
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


def rust_cases(mount: str) -> list[Case]:
    """The Rust examples: the hello table, a panic (500 with an error id, then serving again),
    a hang (504), and the greeter's config and state, with a body that is not UTF-8."""
    faulty = f"{mount}-faulty"
    greeter = f"greeter-{mount}"
    hello = "Hello Plugin!"
    return [
        *hello_cases(mount),
        Case(f"{mount}-panic", "GET", f"/{faulty}/panic", 500, plugin=faulty,
             json_subset={"status": 500}, detail_contains=repr(faulty), extra=_has_error_id),
        Case(f"{mount}-after-panic", "GET", f"/{faulty}", 200, plugin=faulty, text=hello),
        Case(f"{mount}-hang", "GET", f"/{faulty}/hang", 504, plugin=faulty,
             detail_contains=f"did not answer within {FAULTY_TIMEOUT} seconds"),
        Case(f"{mount}-after-hang", "GET", f"/{faulty}", 200, plugin=faulty, text=hello),
        Case(f"{greeter}-config", "GET", f"/{greeter}?who=Bob", 200, plugin=greeter,
             text="Alice says hello Bob!", expect_headers={"content-type": TEXT}),
        Case(f"{greeter}-no-who", "GET", f"/{greeter}", 400, plugin=greeter,
             json_subset={"status": 400, "error": "Bad Request"},
             detail_contains="missing query parameter 'who'"),
        Case(f"{greeter}-not-utf8", "PUT", f"/{greeter}/name", 400, plugin=greeter,
             body=b"\xff\xfe", json_subset={"status": 400}, detail_contains="not UTF-8"),
        Case(f"{greeter}-state", "PUT", f"/{greeter}/name", 200, plugin=greeter,
             body="Zoé".encode(), text="I am Zoé now"),
        Case(f"{greeter}-state-kept", "GET", f"/{greeter}?who=Bob", 200, plugin=greeter,
             text="Zoé says hello Bob!"),
        Case(f"{greeter}-state-back", "PUT", f"/{greeter}/name", 200, plugin=greeter,
             body=b"Alice", text="I am Alice now"),
    ]  # fmt: skip


def _has_error_id(answer: Answer) -> None:
    error_id = answer.json().get("error_id")
    assert isinstance(error_id, str) and len(error_id) == 12, answer.json()
