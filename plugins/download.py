"""A large download, streamed: ``GET /?mb=50`` sends ``mb`` MiB in 64 KiB parts, made one at a
time by a plain (sync) generator, so memory stays flat however large the file.

The bytes are a fixed pattern (part ``i`` is ``BLOCK`` rotated by ``i``), so a client can check
them. ``GET /memory`` reports the host's peak memory: the server's peak RSS or, in the browser,
the size of Pyodide's WebAssembly memory (which only grows).
"""

import sys

from valor import HTTPError, Response, vlugin

PART = 64 * 1024
BLOCK = bytes(range(256)) * (PART // 256)


def pattern(size: int):
    for index in range(-(-size // PART)):
        shift = index % 256
        part = BLOCK[shift:] + BLOCK[:shift]
        yield part[: size - index * PART]


def peak_memory() -> int:
    if sys.platform == "emscripten":
        import pyodide_js

        return pyodide_js._module.HEAPU8.length
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@vlugin
def on_request(req):
    if req.path == "/memory":
        return {"peak_bytes": peak_memory()}
    if req.path != "/":
        raise HTTPError(404, f"no route {req.path}")
    size = int(float(req.query_params.get("mb", "1")) * 1024 * 1024)
    headers = {"content-disposition": 'attachment; filename="pattern.bin"'}
    return Response(pattern(size), headers=headers, media_type="application/octet-stream")
