"""The helper process of an isolated Python plug-in: ``python -m valor.kinds.python.child
DEFINITION``. It loads the plug-in as the host would and answers frames (see
``valor.kinds.shared.process``) concurrently, each in its own task. Its store's calls go to
the host over the same frames (``store_channel``)."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import PluginLoadError
from ...manifest import PluginSpec
from ...store import StoreError
from ...store.api import Store
from ...store.loading import loading_with
from ...streaming import Stream
from ..shared.frames import pack_message, receive_frame, unpack_message, write_frame
from .core import load_python
from .store_channel import ChildBackend, error_head

CANNOT_STREAM = (
    "it answered with a stream, which an isolated plug-in cannot send: answer with the whole "
    "body, or run it in the server's process"
)


def send(out: BinaryIO, request_id: int, head: dict[str, Any], body: bytes = b"") -> None:
    write_frame(out, request_id, pack_message(head, body))


def limit(limits: dict[str, int]) -> None:
    """Apply ``memory_mb`` (address space) now; ``cpu_seconds`` is re-armed per request."""
    if "memory_mb" in limits:
        size = limits["memory_mb"] * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))


def arm_cpu(seconds: int | None) -> None:
    """Let the process spend ``seconds`` more CPU from now (SIGXCPU past it ends it)."""
    if seconds is None:
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    resource.setrlimit(resource.RLIMIT_CPU, (used + seconds, hard))


async def answer(plugin: Any, out: BinaryIO, request_id: int, payload: bytes) -> None:
    head, body = unpack_message(payload)
    message = {"url": head["url"], "method": head["method"], "headers": head["headers"]}
    message["body"] = body or None
    try:
        response = await plugin.handle(message)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        head: dict[str, Any] = {"error": f"plug-in raised {type(exc).__name__}"}
        if isinstance(exc, StoreError):  # raised again in the host: answered as in-process
            head["store_error"] = error_head(exc)
        send(out, request_id, head)
        return
    body = response["body"]
    if isinstance(body, Stream):  # frames carry whole answers
        await body.aclose()
        send(out, request_id, {"error": CANNOT_STREAM})
        return
    send(out, request_id, {"status": response["status"], "headers": response["headers"]}, body)


async def serve(definition: dict[str, Any], out: BinaryIO) -> None:
    limits = definition.get("limits", {})
    spec = PluginSpec(
        name=definition["name"],
        type="python",
        prefix=definition["prefix"],
        path=Path(definition["path"]),
        config=definition["config"],
        limits=limits,
    )
    limit(limits)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**31)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    backend = None
    if "store" in definition:  # the plug-in's store, in the host: calls over the frames
        backend = ChildBackend(
            definition["store"]["description"], lambda i, h, b: send(out, i, h, b)
        )
    # Frames are read from the start: on_create may use the store, whose replies come in here.
    loaded: asyncio.Future[Any] = loop.create_future()
    reading = asyncio.ensure_future(read_frames(reader, out, loaded, backend, limits))
    try:
        if backend is None:
            plugin = await load_python(spec)
        else:
            with loading_with(Store(backend, definition["store"]["namespace"])):
                plugin = await load_python(spec)
    except PluginLoadError as exc:
        send(out, 0, {"error": exc.reason})
        reading.cancel()
        return
    send(out, 0, {"ready": True})
    loaded.set_result(plugin)
    await reading


async def read_frames(
    reader: asyncio.StreamReader,
    out: BinaryIO,
    loaded: asyncio.Future[Any],
    backend: ChildBackend | None,
    limits: dict[str, int],
) -> None:
    """Until the host closes stdin: replies to store calls, and requests, each answered in a
    task of its own (the host sends none before the plug-in is ready)."""
    tasks: set[asyncio.Task[None]] = set()
    while True:
        try:
            request_id, payload = await receive_frame(reader)
        except asyncio.IncompleteReadError:
            return
        head, body = unpack_message(payload)
        if head.get("reply"):
            if backend is not None:
                backend.replied(request_id, head, body)
            continue
        if head.get("cancel"):
            continue
        arm_cpu(limits.get("cpu_seconds"))
        task = asyncio.ensure_future(answer(await loaded, out, request_id, payload))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def main() -> None:
    # Plug-in output on stdout would corrupt the frames: frames get their own copy of fd 1,
    # and fd 1 itself now goes to stderr, i.e. to the host's log.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    asyncio.run(serve(json.loads(sys.argv[1]), out))


if __name__ == "__main__":
    main()
