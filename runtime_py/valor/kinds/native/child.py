"""The helper process that runs a native plug-in: ``python -I child.py LIBRARY``.

It loads the shared library with ctypes and answers frames (see ``valor.kinds.shared.process``)
one at a time, so a crash or a hang in C code takes down this process, never the host. Run as
a script in isolated mode (``-I``), without the ``valor`` package: it imports only the standard
library and the frame codec, from the codec's own file.

C ABI::

    int  valor_init(const char *config_json, size_t len);   // optional; non-zero: load error
    int  valor_handle(const uint8_t *req, size_t len, uint8_t **resp, size_t *resp_len);
    void valor_free(uint8_t *resp);
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

# Importing valor would cost each start of this process tens of milliseconds: the codec, which
# imports only the standard library, is taken from its folder instead.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "shared"))
from frames import pack_message, read_frame, unpack_message, write_frame


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
        received = read_frame(stdin)
        if received is None:
            return
        request_id, payload = received
        if unpack_message(payload)[0].get("cancel"):
            continue
        code = lib.valor_handle(payload, len(payload), ctypes.byref(resp), ctypes.byref(resp_len))
        if code != 0 or not resp:
            error = pack_message({"error": f"valor_handle() returned {code}"})
            write_frame(stdout, request_id, error)
            continue
        answer = ctypes.string_at(resp, resp_len.value)
        lib.valor_free(resp)
        write_frame(stdout, request_id, answer)


def main() -> None:
    # Plug-in output on stdout would corrupt the frames: frames get their own copy of fd 1,
    # and fd 1 itself (C's stdout) now goes to stderr, i.e. to the host's log.
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    try:
        lib = load(sys.argv[1], sys.argv[2].encode() if len(sys.argv) > 2 else b"{}")
    except OSError as exc:
        write_frame(frames, 0, pack_message({"error": str(exc)}))
        return
    write_frame(frames, 0, pack_message({"ready": True}))
    serve(lib, sys.stdin.buffer, frames)


if __name__ == "__main__":
    main()
