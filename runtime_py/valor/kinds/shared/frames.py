"""The codec between the server and its helper processes (Deno, the native and the isolated
Python children), and the message format the wasm and native ABI shares.

A message is one buffer: a 4-byte little-endian length ``n``, then ``n`` bytes of a JSON head,
then the raw body (the rest of the buffer). A frame, on a helper's stdin or stdout, is a 4-byte
big-endian request id, a 4-byte big-endian length, then that many bytes of one message.

Standard library only, with no import from ``valor``: the native helper runs it from its file,
without the package (see ``valor.kinds.native.child``). Deno's side is ``js/scripts/deno_host.mjs``.
"""

from __future__ import annotations

import json
import struct
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    from asyncio import StreamReader

FRAME = struct.Struct(">II")  # request id, message length
_HEAD_LENGTH = struct.Struct("<I")


class AbiError(ValueError):
    """A buffer from a plug-in that does not follow the message format."""


def pack_message(head: dict[str, Any], body: bytes = b"") -> bytes:
    """A head and a body as one buffer."""
    raw = json.dumps(head, separators=(",", ":")).encode()
    return b"".join((_HEAD_LENGTH.pack(len(raw)), raw, body))


def unpack_message(buffer: bytes) -> tuple[dict[str, Any], bytes]:
    """A buffer's head and body; ``AbiError`` says what is wrong."""
    if len(buffer) < _HEAD_LENGTH.size:
        raise AbiError(f"a message needs at least 4 bytes (the head length), got {len(buffer)}")
    (size,) = _HEAD_LENGTH.unpack_from(buffer)
    if size > len(buffer) - _HEAD_LENGTH.size:
        raise AbiError(f"head length {size} is past the end of the {len(buffer)}-byte message")
    try:
        head = json.loads(buffer[_HEAD_LENGTH.size : _HEAD_LENGTH.size + size])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AbiError(f"the message head is not valid JSON: {exc}") from None
    if not isinstance(head, dict):
        raise AbiError("the message head must be a JSON object")
    return head, bytes(buffer[_HEAD_LENGTH.size + size :])


def frame(request_id: int, message: bytes) -> bytes:
    """A message as the frame that carries it."""
    return FRAME.pack(request_id, len(message)) + message


def write_frame(out: BinaryIO, request_id: int, message: bytes) -> None:
    """Send one frame now (a helper's side: its stdout is a pipe the host reads)."""
    out.write(frame(request_id, message))
    out.flush()


def read_frame(stream: BinaryIO) -> tuple[int, bytes] | None:
    """The next frame's request id and message, or None at the end of ``stream``."""
    header = stream.read(FRAME.size)
    if len(header) < FRAME.size:
        return None
    request_id, size = FRAME.unpack(header)
    return request_id, stream.read(size)


async def receive_frame(reader: StreamReader) -> tuple[int, bytes]:
    """The next frame from an asyncio stream; ``IncompleteReadError`` at its end."""
    request_id, size = FRAME.unpack(await reader.readexactly(FRAME.size))
    return request_id, await reader.readexactly(size)
