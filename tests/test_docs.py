"""Every command in the docs runs, so the docs cannot rot.

The conventions (also in docs/README.md):

- In a ```console block, a line starting with ``$ `` is a command (a trailing ``\\`` continues
  it); the lines up to the next command are its expected output, checked in order as a
  subsequence of the real output, blank lines ignored. ``...``, or a value ending in ``...``
  (``0b9d6c1e...``), matches any text. A block without ``$`` lines is a synopsis: not run.
- In a ```bash block, every line that is not a comment is a command; output is not checked.
- A block whose info string says ``file=PATH`` (```python file=app.py) is written to PATH
  before the commands after it run, so a tutorial's files are the ones its commands use.
- ``<!-- docs-test: skip REASON -->`` right before a fence leaves the block out.
- Each file runs top to bottom in a fresh folder holding a copy of ``plugins/`` and ``sdk/``;
  ``cd DIR`` changes the folder for the commands after it. Every command must exit 0.
- A command ending in ``&``, or a server (``valor serve``, ``valor dev``, ``valor build
  --serve``, ``uvicorn``, ``python -m http.server``), runs in the background until the file is
  done; the next command waits until its ports accept connections.
- Ports 8000-8099 are replaced by free ports, the same way throughout a file (commands,
  expected output and ``file=`` blocks), so examples can say ``--port 8000`` and never clash
  with anything running.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import ROOT
from valor.processes import free_port

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_TIMEOUT = 240  # seconds; the first `valor build` on a machine fetches Pyodide
START_TIMEOUT = 120
FENCE = re.compile(r"^```(\w*)(?:\s+file=(\S+))?\s*$")
SKIP = re.compile(r"<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->")
PORT = re.compile(r"\b80\d\d\b")
# Servers, with the port flags they default to, so a port the docs leave implicit is known.
SERVERS = {
    r"\bvalor serve\b": "--port 8000",
    r"\bvalor dev\b": "--port 8080 --server-port 8000",
    r"\bvalor build\b.*--serve\b": "--port 8080",
    r"\buvicorn\b": "--port 8000",
    r"\bhttp\.server\b": "8000",
}


@dataclass
class Command:
    line: int
    text: str
    expected: list[str] = field(default_factory=list)
    check_output: bool = True


@dataclass
class Block:
    line: int
    language: str
    commands: list[Command]
    skip: str | None = None
    file: str | None = None
    text: str = ""


def blocks(path: Path) -> list[Block]:
    """The console and bash blocks of a Markdown file, with their commands."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        language, file, start = opening.group(1), opening.group(2), index
        index += 1
        body = []
        while index < len(lines) and not lines[index].startswith("```"):
            body.append(lines[index])
            index += 1
        index += 1
        before = lines[start - 1] if start else ""
        skipped = SKIP.search(before)
        if file is not None:
            block = Block(start + 1, language, [], file=file, text="\n".join(body) + "\n")
        elif language in ("console", "bash"):
            parse = _console if language == "console" else _bash
            block = Block(start + 1, language, parse(body, start + 2))
        else:
            continue
        block.skip = (skipped.group(1) or "no reason given") if skipped else None
        found.append(block)
    return found


def _console(body: list[str], first: int) -> list[Command]:
    commands: list[Command] = []
    continued = False
    for offset, line in enumerate(body):
        if continued:
            commands[-1].text += "\n" + line
            continued = line.endswith("\\")
        elif line.startswith("$ "):
            commands.append(Command(first + offset, line[2:]))
            continued = line.endswith("\\")
        elif commands:
            commands[-1].expected.append(line)
    return commands


def _bash(body: list[str], first: int) -> list[Command]:
    commands: list[Command] = []
    continued = False
    for offset, line in enumerate(body):
        if continued:
            commands[-1].text += "\n" + line
        elif line.strip() and not line.lstrip().startswith("#"):
            commands.append(Command(first + offset, line, check_output=False))
        continued = line.endswith("\\")
    return commands


def matches(expected: list[str], output: str) -> str | None:
    """None if ``expected`` appears in order in ``output``; else the first line that does not."""
    actual = [line.rstrip() for line in output.replace("\r", "").splitlines() if line.strip()]
    position = 0
    for line in (e.rstrip() for e in expected if e.strip()):
        pattern = re.compile(
            ".*".join(re.escape(part) for part in re.split(r"\S*\.\.\.", line)) + "$"
        )
        while position < len(actual) and not pattern.match(actual[position]):
            position += 1
        if position == len(actual):
            return line
        position += 1
    return None


class Session:
    """Runs one file's commands in its own folder; servers stay up until ``close``."""

    def __init__(self, folder: Path) -> None:
        self.cwd = folder
        self.ports: dict[str, str] = {}
        self.background: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}

    def port(self, match: re.Match[str]) -> str:
        return self.ports.setdefault(match.group(0), str(free_port()))

    def run(self, command: Command, where: str) -> None:
        text = command.text.strip()
        cd = re.fullmatch(r"cd\s+(\S+)", text)
        if cd:
            self.cwd = (self.cwd / cd.group(1)).resolve()
            return
        server = next(
            (flags for pattern, flags in SERVERS.items() if re.search(pattern, text)), None
        )
        if server is not None and not PORT.search(text):
            text = text.rstrip(" &") + " " + server  # make the default port explicit
        text = PORT.sub(self.port, text)
        if text.endswith("&") or server is not None:
            self._start(text.rstrip(" &"), where)
            return
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", text],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"{where}: `{text}` exited {done.returncode}:\n{output}"
        if command.check_output and command.expected:
            expected = [PORT.sub(self.port, line) for line in command.expected]
            missing = matches(expected, done.stdout)
            assert missing is None, (
                f"{where}: `{text}`: expected output line not found:\n  {missing}\n"
                f"in:\n{done.stdout}"
            )

    def _start(self, text: str, where: str) -> None:
        log = self.cwd / f".docs-test-{len(self.background)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["bash", "-c", f"exec {text}"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, stopped as a whole
            )
        self.background.append((process, log))
        ports = [int(p) for p in re.findall(r"(?<![\d.])\d{4,5}\b", text) if int(p) >= 1024]
        assert ports, f"{where}: `{text}` runs in the background but names no port"
        deadline = time.monotonic() + START_TIMEOUT
        for port in ports:
            while not _accepts(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"{where}: `{text}` did not start listening on {port}:\n"
                        f"{log.read_text(errors='replace')}"
                    )
                time.sleep(0.1)

    def close(self) -> None:
        for process, _ in self.background:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process, _ in self.background:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    for folder in ("plugins", "sdk"):  # the Rust examples find the SDK at ../../../sdk
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "target")
        )
    running = Session(tmp_path)
    try:
        yield running
    finally:
        running.close()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_the_docs_runs(doc: Path, session: Session) -> None:
    skipped = []
    for block in blocks(doc):
        if block.skip is not None:
            skipped.append(f"line {block.line}: {block.skip}")
            continue
        if block.file is not None:
            target = session.cwd / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(PORT.sub(session.port, block.text))
        for command in block.commands:
            session.run(command, f"{doc.name}:{command.line}")
    print("\n".join(f"{doc.name}: skipped {note}" for note in skipped))


def test_the_extractor_follows_the_conventions(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```console\n$ echo one \\\n  two\none two\n$ true\n```\n"
        "<!-- docs-test: skip needs the internet -->\n```bash\npip install x\n```\n"
        "```bash\n# a comment\nexport A=1\n\nls\n```\n"
        "```console\nvalor serve [MANIFEST]\n```\n"
        "```python\nprint('not a command')\n```\n"
        "```python file=app/x.py\nprint('a file')\n```\n"
    )
    found = blocks(doc)
    assert [(b.language, b.skip) for b in found] == [
        ("console", None),
        ("bash", "needs the internet"),
        ("bash", None),
        ("console", None),
        ("python", None),
    ]
    assert (found[4].file, found[4].text) == ("app/x.py", "print('a file')\n")
    assert [(c.text, c.expected) for c in found[0].commands] == [
        ("echo one \\\n  two", ["one two"]),
        ("true", []),
    ]
    assert [c.text for c in found[2].commands] == ["export A=1", "ls"]
    assert found[3].commands == []


@pytest.mark.parametrize(
    ("expected", "output", "missing"),
    [
        (["HTTP/1.1 200 OK", "x-id: 0b9d..."], "HTTP/1.1 200 OK\r\ndate: x\r\nx-id: 77\r\n", None),
        (["2 passed in ..."], "..  [100%]\n2 passed in 0.41s\n", None),
        (["b", "a"], "a\nb\n", "a"),
        (["Hello"], "Hello world\n", "Hello"),
    ],
)
def test_output_matching(expected: list[str], output: str, missing: str | None) -> None:
    assert matches(expected, output) == missing


def test_a_failing_command_fails(session: Session) -> None:
    with pytest.raises(AssertionError, match="exited 3"):
        session.run(Command(1, "exit 3"), "doc.md:1")
    with pytest.raises(AssertionError, match="expected output line not found"):
        session.run(Command(1, "echo hello", ["goodbye"]), "doc.md:1")


def test_ports_are_replaced_consistently(session: Session) -> None:
    session.run(Command(1, "python -m http.server 8042 --bind 127.0.0.1 &"), "doc.md:1")
    session.run(
        Command(
            2, "curl -so /dev/null -w '%{http_code} 8042' http://127.0.0.1:8042/", ["200 8042"]
        ),
        "doc.md:2",
    )
    assert session.ports["8042"] != "8042"
