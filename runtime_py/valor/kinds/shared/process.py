"""A plug-in in a helper process, spoken to with frames over its stdin and stdout.

Frames and the messages they carry are ``valor.kinds.shared.frames``. Many requests may be in
flight at once; answers come back in any order, matched by id. Frame 0 from the process says
it is ready (``{"ready": true}``) or why it could not load (``{"error": ...}``). A frame from
the process whose head has ``"call"`` is a call to the host (an isolated plug-in's store),
at any time, loading included: ``on_call`` answers it with a frame of the same id. An answer whose
head has ``"error"`` is a failure: ``"crashed": true`` answers 502, otherwise 500. If the
process exits, every request in flight answers 502 and the next request starts a new process.
CPython only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ...errors import PluginCrashed, PluginLoadError
from ...failures import PluginFailed, reported_failure
from ...wire import RequestMessage, ResponseMessage
from .abi import AbiError, encode_request, response_from
from .frames import frame, pack_message, receive_frame, unpack_message

log = logging.getLogger("valor.plugins")
START_TIMEOUT = 30.0
# What a helper process inherits of the host's environment: enough to run, no secrets (the
# registry token, cloud credentials and the like stay in the host).
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "DENO_DIR")


OnCall = Callable[[dict[str, Any], bytes], Awaitable[tuple[dict[str, Any], bytes]]]
"""Answers a call from a helper process (a head and a body) with a reply's head and body."""


def helper_environment(**extra: str) -> dict[str, str]:
    """A minimal environment for a helper process, plus ``extra``."""
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update(extra)
    return env


class PluginProcess:
    """One helper process for plug-in ``name``, started lazily and restarted after a crash.

    ``on_cancel`` says what to do when a request is cancelled (the runtime's timeout): "kill"
    the process (it answers one request at a time, so it is stuck) or tell it with a
    ``{"cancel": true}`` frame for that id.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        on_cancel: str = "kill",
        env: dict[str, str] | None = None,
        on_call: OnCall | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env if env is not None else helper_environment()
        self.on_cancel = on_cancel
        self.on_call = on_call
        self._proc: asyncio.subprocess.Process | None = None
        self._starting: asyncio.Task[None] | None = None
        # Each request's process too: a process dying must fail its own requests only, not
        # those already sent to the one that replaced it.
        self._pending: dict[
            int, tuple[asyncio.subprocess.Process, asyncio.Future[tuple[dict[str, Any], bytes]]]
        ] = {}
        self._ids = itertools.count()
        self._write_lock = asyncio.Lock()
        self._stderr: deque[str] = deque(maxlen=20)
        self._tasks: set[asyncio.Task[None]] = set()
        self.restarts = 0

    async def start(self) -> None:
        """Start the process and wait for its ready frame; a load failure raises
        ``PluginLoadError``."""
        if self._proc is not None and self._proc.returncode is None:
            return
        if self._starting is None or self._starting.done():
            self._starting = asyncio.ensure_future(self._spawn())
        await asyncio.shield(self._starting)

    async def _spawn(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
        )
        self._spawn_task(self._drain_stderr(proc))
        try:
            frame = await asyncio.wait_for(self._first_answer(proc), START_TIMEOUT)
        except (asyncio.IncompleteReadError, TimeoutError, AbiError):
            await self._kill(proc)
            raise PluginLoadError(self.name, self._why_not_ready(proc)) from None
        head = frame[1][0]
        if not head.get("ready"):
            await self._kill(proc)
            raise PluginLoadError(self.name, str(head.get("error") or "it did not start"))
        self._proc = proc
        self._spawn_task(self._read_answers(proc))

    def _why_not_ready(self, proc: asyncio.subprocess.Process) -> str:
        detail = "; ".join(self._stderr) or "no output"
        return f"its process exited before it was ready ({detail})"

    def _spawn_task(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def request(self, payload: bytes) -> tuple[dict[str, Any], bytes]:
        """Send one request (an abi buffer); returns the answer's head and body."""
        try:
            await self.start()
        except PluginLoadError as exc:
            raise PluginCrashed(f"it could not restart: {exc.reason}") from None
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        request_id = next(self._ids) % 0xFFFF_FFFF + 1  # 0 is the ready frame
        future: asyncio.Future[tuple[dict[str, Any], bytes]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[request_id] = (proc, future)
        try:
            await self._write(proc, request_id, payload)
            return await future
        except asyncio.CancelledError:
            if self.on_cancel == "kill" and self._proc is proc:
                # At once: the deadline may cancel this wait for the kill again and answer,
                # and the next request must start a new process, not reach this dying one.
                self._proc = None
            await asyncio.shield(self._cancel(proc, request_id))
            raise
        finally:
            self._pending.pop(request_id, None)

    async def _write(
        self, proc: asyncio.subprocess.Process, request_id: int, payload: bytes
    ) -> None:
        assert proc.stdin is not None
        async with self._write_lock:
            try:
                proc.stdin.write(frame(request_id, payload))
                await proc.stdin.drain()
            except (ConnectionError, RuntimeError):
                raise PluginCrashed(self._crash_message(proc)) from None

    async def _cancel(self, proc: asyncio.subprocess.Process, request_id: int) -> None:
        if self.on_cancel == "kill":
            log.warning("plug-in %s: request timed out, restarting its process", self.name)
            await self._kill(proc)
        elif proc.returncode is None:
            with contextlib.suppress(PluginCrashed):
                await self._write(proc, request_id, pack_message({"cancel": True}, b""))

    async def _read_frame(self, proc: asyncio.subprocess.Process) -> tuple[int, tuple[dict, bytes]]:
        assert proc.stdout is not None
        request_id, message = await receive_frame(proc.stdout)
        return request_id, unpack_message(message)

    async def _first_answer(
        self, proc: asyncio.subprocess.Process
    ) -> tuple[int, tuple[dict, bytes]]:
        """The first frame that is not a call (its plug-in may call the host while loading)."""
        while True:
            request_id, message = await self._read_frame(proc)
            if "call" not in message[0]:
                return request_id, message
            self._spawn_task(self._answer_call(proc, request_id, *message))

    async def _answer_call(
        self, proc: asyncio.subprocess.Process, call_id: int, head: dict[str, Any], body: bytes
    ) -> None:
        reply: tuple[dict[str, Any], bytes] = ({"reply": True, "error": {}}, b"")
        if self.on_call is not None:
            try:
                reply = await self.on_call(head, body)
            except Exception:  # the host's own bug: logged, and the call still answered
                log.exception("plug-in %s: answering a call from its process failed", self.name)
        # To the process that called only: a process started since has ids of its own. One
        # killed meanwhile never reads it (what the call did is done, as for a client gone).
        if proc.returncode is None:
            with contextlib.suppress(PluginCrashed):
                await self._write(proc, call_id, pack_message(*reply))

    async def _read_answers(self, proc: asyncio.subprocess.Process) -> None:
        try:
            while True:
                request_id, answer = await self._read_frame(proc)
                if "call" in answer[0]:
                    self._spawn_task(self._answer_call(proc, request_id, *answer))
                    continue
                proc_and_future = self._pending.get(request_id)
                if proc_and_future is None or proc_and_future[0] is not proc:
                    continue
                future = proc_and_future[1]
                if not future.done():
                    future.set_result(answer)
        except (asyncio.IncompleteReadError, ConnectionError, AbiError) as exc:
            if isinstance(exc, AbiError):
                log.error("plug-in %s: bad frame from its process: %s", self.name, exc)
            await self._kill(proc)
            await proc.wait()
            self.restarts += 1
            error = PluginCrashed(self._crash_message(proc))
            for owner, future in list(self._pending.values()):
                if owner is proc and not future.done():
                    future.set_exception(error)

    def _crash_message(self, proc: asyncio.subprocess.Process) -> str:
        detail = f" ({self._stderr[-1]})" if self._stderr else ""
        return f"its process exited with code {proc.returncode}{detail}"

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            text = line.decode(errors="replace").rstrip()
            if text:
                self._stderr.append(text)
                log.warning("plug-in %s: %s", self.name, text)

    async def _kill(self, proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is None:
            # os.kill, not proc.kill(): Popen polls before signalling, and a poll that reaps the
            # process behind asyncio's child watcher makes it log "Unknown child process pid".
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()
        if self._proc is proc:
            self._proc = None

    async def close(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self._proc is not None:
            await self._kill(self._proc)
        for task in list(self._tasks):
            task.cancel()


def answer_of(name: str, head: dict[str, Any], body: bytes) -> ResponseMessage:
    """Turn an answer frame into a wire response; raise the failure it reports."""
    if "error" in head:
        raise reported_failure(name, head["error"], bool(head.get("crashed")))
    try:
        return response_from(head, body)
    except AbiError as exc:
        raise PluginFailed(500, f"plug-in {name!r} answered badly: {exc}") from None


class ProcessPlugin:
    """A plug-in answered by a ``PluginProcess`` (Deno for js, the ctypes child for native)."""

    def __init__(self, name: str, process: PluginProcess) -> None:
        self.name = name
        self.process = process

    async def handle(self, message: RequestMessage) -> ResponseMessage:
        head, body = await self.process.request(encode_request(message))
        return answer_of(self.name, head, body)

    async def close(self) -> None:
        await self.process.close()
