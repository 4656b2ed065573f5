"""The helper process that runs a native plug-in: ``python native_child.py LIBRARY``.

It loads the shared library with ctypes and answers frames (see ``valor.loaders.process``) one
at a time, so a crash or a hang in C code takes down this process, never the host. Standard
library only, and run as a script, so it needs no import path.

C ABI::

    int  valor_init(const char *config_json, size_t len);   // optional; non-zero: load error
    int  valor_handle(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len);
    void valor_free(uint8_t *resp);
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys

FRAME = struct.Struct(">II")
_LEN = struct.Struct("<I")


def message(head: dict, body: bytes = b"") -> bytes:
    raw = json.dumps(head).encode()
    return _LEN.pack(len(raw)) + raw + body


def send(out, request_id: int, payload: bytes) -> None:
    out.write(FRAME.pack(request_id, len(payload)) + payload)
    out.flush()


def load(path: str, config: bytes):
    lib = ctypes.CDLL(path)
    missing = [name for name in ("valor_handle", "valor_free") if not hasattr(lib, name)]
    if missing:
        raise OSError(f"the library does not export {', '.join(missing)}")
    handle = lib.valor_handle
    handle.argtypes = [
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
        ctypes.POINTER(ctypes.c_size_t),
    ]
    handle.restype = ctypes.c_int
    lib.valor_free.argtypes = [ctypes.POINTER(ctypes.c_ubyte)]
    lib.valor_free.restype = None
    if hasattr(lib, "valor_init"):
        lib.valor_init.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.valor_init.restype = ctypes.c_int
        code = lib.valor_init(config, len(config))
        if code != 0:
            raise OSError(f"valor_init() returned {code}")
    return lib


def serve(lib, stdin, stdout) -> None:
    resp = ctypes.POINTER(ctypes.c_ubyte)()
    resp_len = ctypes.c_size_t()
    while True:
        header = stdin.read(FRAME.size)
        if len(header) < FRAME.size:
            return
        request_id, size = FRAME.unpack(header)
        payload = stdin.read(size)
        head = json.loads(payload[4 : 4 + _LEN.unpack_from(payload)[0]])
        if head.get("cancel"):
            continue
        code = lib.valor_handle(payload, len(payload), ctypes.byref(resp), ctypes.byref(resp_len))
        if code != 0 or not resp:
            send(stdout, request_id, message({"error": f"valor_handle() returned {code}"}))
            continue
        answer = ctypes.string_at(resp, resp_len.value)
        lib.valor_free(resp)
        send(stdout, request_id, answer)


def main() -> None:
    # Plug-in output on stdout would corrupt the frames: frames get their own copy of fd 1,
    # and fd 1 itself (C's stdout) now goes to stderr, i.e. to the host's log.
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        lib = load(sys.argv[1], sys.argv[2].encode() if len(sys.argv) > 2 else b"{}")
    except OSError as exc:
        send(frames, 0, message({"error": str(exc)}))
        return
    send(frames, 0, message({"ready": True}))
    serve(lib, sys.stdin.buffer, frames)


if __name__ == "__main__":
    main()
