"""``valor call``: one request through the runtime in-process, printed like ``curl -i``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.servers import MANIFEST
from valor import call


def main(argv: list[str]) -> int:
    """``valor call``'s main() in-process, in a thread of its own as in a fresh process: other
    test modules may leave an event loop registered in the main thread."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(call.main, argv).result()


def valor_call(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The real command, in a subprocess: exit status, stdout bytes and stderr as they are."""
    return subprocess.run(
        [sys.executable, "-m", "valor.cli", "call", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def test_prints_status_line_headers_and_body() -> None:
    done = valor_call(str(MANIFEST), "GET", "/greeter?who=Bob")
    assert done.returncode == 0, done.stderr
    head, _, body = done.stdout.decode().partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "HTTP 200 OK"
    assert "content-type: text/plain; charset=utf-8" in lines
    assert "x-valor-plugin: greeter" in lines
    assert any(line.startswith("x-correlation-id: ") for line in lines)
    assert body == "Alice says hello Bob!\n"


def test_json_body_and_headers(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            str(MANIFEST),
            "post",
            "/notes",
            "--json",
            '{"text": "buy milk"}',
            "-H",
            "X-Request-Id: r-1",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("HTTP 201 Created\n")
    note = json.loads(out.partition("\n\n")[2])
    assert note["text"] == "buy milk"
    assert f"location: /notes/{note['id']}\n" in out
    assert "x-correlation-id: r-1\n" in out  # the runtime found "X-Request-Id" as x-request-id


def test_data_from_a_file_round_trips_bytes(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4
    (tmp_path / "blob.bin").write_bytes(payload)
    done = valor_call(
        str(MANIFEST),
        "PUT",
        "/echo/x",
        "--data",
        f"@{tmp_path / 'blob.bin'}",
        "-H",
        "Content-Type: application/x-blob",
        "--body-only",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload


def test_data_from_stdin() -> None:
    done = valor_call(str(MANIFEST), "POST", "/echo", "--data", "@-", "-b", stdin=b"from stdin")
    assert done.stdout == b"from stdin"


def test_a_4xx_exits_0_and_a_5xx_exits_1() -> None:
    missing = valor_call(str(MANIFEST), "GET", "/nope")
    assert missing.returncode == 0
    assert missing.stdout.startswith(b"HTTP 404 Not Found\n")
    raised = valor_call(str(MANIFEST), "GET", "/faulty/raise")
    assert raised.returncode == 1
    assert raised.stdout.startswith(b"HTTP 500 Internal Server Error\n")
    error_id = json.loads(raised.stdout.partition(b"\n\n")[2])["error_id"]
    # The traceback goes to stderr under the same id, so stdout holds only the answer.
    assert f"error_id={error_id}".encode() in raised.stderr
    assert b"RuntimeError: faulty plug-in raised on purpose" in raised.stderr


def test_a_timeout_is_a_504_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(MANIFEST), "GET", "/faulty/hang"]) == 1
    assert "did not answer within 2 seconds" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("manifest_text", "message"),
    [
        (None, "cannot read manifest"),
        ("{not json", "is not valid JSON"),
        ('{"plugins": [{"name": "x", "type": "python"}]}', "plug-in 'x': 'path' is required"),
        ('{"plugins": [{"name": "x", "type": "cobol", "path": "x"}]}', "'type' must be one of"),
    ],
)
def test_a_bad_manifest_is_a_clear_message_and_exit_2(
    tmp_path: Path, manifest_text: str | None, message: str
) -> None:
    manifest = tmp_path / "plugins.json"
    if manifest_text is not None:
        manifest.write_text(manifest_text)
    done = valor_call(str(manifest), "GET", "/x")
    assert done.returncode == 2
    assert done.stdout == b""
    assert message in done.stderr.decode()
    assert "Traceback" not in done.stderr.decode()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["GET", "hello"], "PATH must start with '/'"),
        (["GET", "/hello", "-H", "no colon"], "a header must look like 'Name: value'"),
        (["POST", "/echo", "--data", "@/nonexistent/file"], "cannot read '/nonexistent/file'"),
        (["POST", "/notes", "--json", "{oops"], "--json is not valid JSON"),
    ],
)
def test_bad_arguments_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main([str(MANIFEST), *args]) == 2
    assert message in capsys.readouterr().err


def test_a_broken_plugin_is_reported_and_the_others_answer(tmp_path: Path) -> None:
    (tmp_path / "ok.py").write_text(
        "from valor import vlugin\n@vlugin\ndef on_request(r):\n    return 'ok'\n"
    )
    (tmp_path / "broken.py").write_text("def on_request(:\n")
    manifest = tmp_path / "plugins.json"
    manifest.write_text(
        json.dumps(
            {
                "plugins": [
                    {"name": "broken", "type": "python", "path": "broken.py"},
                    {"name": "ok", "type": "python", "path": "ok.py"},
                ]
            }
        )
    )
    done = valor_call(str(manifest), "GET", "/ok", "-b")
    assert done.returncode == 0
    assert done.stdout == b"ok"
    assert b"plug-in 'broken' failed to load: syntax error" in done.stderr
    # Its own prefix answers the runtime's 503 naming the failure: a failed call, exit 1.
    failed = valor_call(str(manifest), "GET", "/broken/x")
    assert failed.returncode == 1, failed
    assert failed.stdout.startswith(b"HTTP 503 ") and b"syntax error" in failed.stdout
    strict = valor_call(str(manifest), "GET", "/ok", "--strict")
    assert strict.returncode == 2
    assert b"plug-in 'broken' failed to load" in strict.stderr
    assert strict.stdout == b""


def test_a_js_plugin_leaves_stderr_clean(tmp_path: Path) -> None:
    """Stopping Deno used to log asyncio's "Unknown child process pid N" now and then."""
    (tmp_path / "hello.js").write_text((MANIFEST.parent / "hello.js").read_text())
    manifest = tmp_path / "plugins.json"
    manifest.write_text('{"plugins": [{"name": "js", "type": "js", "path": "hello.js"}]}')
    for _ in range(4):
        done = valor_call(str(manifest), "GET", "/js", "-b")
        assert (done.returncode, done.stdout, done.stderr) == (0, b"Hello Plugin!", b"")


def test_stopping_a_plugin_process_never_reaps_it_behind_the_child_watcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only asyncio's child watcher may wait for a plug-in's process: a ``waitpid`` anywhere
    else can reap it first, and the watcher then logs "Unknown child process pid"."""
    from valor.kinds.shared.process import PluginProcess

    waiters: list[str] = []
    real_waitpid = os.waitpid

    def waitpid(pid: int, options: int) -> tuple[int, int]:
        waiters.append(threading.current_thread().name)
        return real_waitpid(pid, options)

    def poll(self: subprocess.Popen[bytes]) -> int | None:  # Popen.poll calls waitpid
        waiters.append(f"Popen.poll in {threading.current_thread().name}")
        return real_poll(self)

    real_poll = subprocess.Popen.poll
    monkeypatch.setattr(os, "waitpid", waitpid)
    monkeypatch.setattr(subprocess.Popen, "poll", poll)
    ready = "import sys, struct; h=b'{\"ready\": true}'; m=struct.pack('<I', len(h))+h; "
    ready += "sys.stdout.buffer.write(struct.pack('>II', 0, len(m))+m); sys.stdout.flush(); "
    ready += "sys.stdin.read()"

    async def start_and_stop() -> None:
        process = PluginProcess("p", [sys.executable, "-c", ready])
        await process.start()
        await process.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, start_and_stop()).result()
    assert waiters and all(name.startswith("asyncio-waitpid") for name in waiters), waiters
