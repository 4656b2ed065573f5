"""A real HTTP server on 127.0.0.1 for plug-ins to call out to, in both hosts' tests.

It allows any origin with CORS (preflights included) and exposes every header, so a page's
``fetch`` sees what httpx sees. Its own headers are fixed (no changing ``Date``), so answers
compare byte for byte. What is slow waits on an event the test sets, never on a clock:

- ``/answer``: a fixed answer, with a repeated header;
- ``/echo``: the method, body, ``x-test`` and ``cookie`` headers it got, as JSON;
- ``/set-cookie``: sets a cookie;
- ``/no-cors``: an answer without CORS headers;
- ``/slow``: answers once ``release`` is set (the tests' timeouts fire first);
- ``/stream``: a first part, then the second once ``release_stream`` is set;
- ``/big?size=N``: N bytes; ``/big-chunked?size=N`` the same without a content-length;
- ``/news.json``: a headline, for the example plug-in ``plugins/digest.py``;
- ``POST /release-stream``: sets ``release_stream`` (for a page's script).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, urlsplit

NEWS = b'{"headline": "Valor calls out"}'
CORS = [
    ("access-control-allow-origin", "*"),
    ("access-control-expose-headers", "*"),
]


class Upstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.release = threading.Event()
        self.release_stream = threading.Event()
        self.streaming = threading.Event()  # the stream's first part is sent
        self.slow_calls = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream
    server_version = "upstream"
    sys_version = ""

    def date_time_string(self, timestamp: Any = None) -> str:
        return "Mon, 07 Dec 2026 00:00:00 GMT"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_OPTIONS(self) -> None:
        self.send_response(204)
        self.send_header("access-control-allow-origin", "*")
        self.send_header("access-control-allow-methods", "*")
        self.send_header("access-control-allow-headers", "*")
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        if self.path == "/release-stream":
            self.server.release_stream.set()
            self._send(204, b"", [])
            return
        self._answer()

    def _answer(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        size = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(size) if size else b""
        if url.path == "/answer":
            self._send(
                200,
                b"the upstream's answer\n",
                [("content-type", "text/plain"), ("x-upstream", "one"), ("x-upstream", "two")],
            )
        elif url.path == "/echo":
            seen = {
                "method": self.command,
                "body": body.decode("latin-1"),
                "x-test": self.headers.get("x-test"),
                "cookie": self.headers.get("cookie"),
            }
            self._send(200, json.dumps(seen).encode(), [("content-type", "application/json")])
        elif url.path == "/slow":
            self.server.slow_calls += 1
            self.server.release.wait(60)
            self._send(200, b"late\n", [("content-type", "text/plain")])
        elif url.path == "/stream":
            self._stream()
        elif url.path == "/no-cors":  # a browser refuses this answer to another site
            self._send(200, b"for servers only\n", [("content-type", "text/plain")], cors=False)
        elif url.path == "/set-cookie":
            self._send(200, b"", [("set-cookie", "session=one-user; Path=/")])
        elif url.path == "/news.json":
            self._send(200, NEWS, [("content-type", "application/json")])
        elif url.path == "/big-chunked":  # no content-length: the size shows as it is read
            self._chunked(b"x" * int(query["size"][0]))
        elif url.path == "/big":
            self._send(200, b"x" * int(query["size"][0]), [("content-type", "text/plain")])
        else:
            self._send(404, b"not here\n", [("content-type", "text/plain")])

    def _send(
        self, status: int, body: bytes, headers: list[tuple[str, str]], cors: bool = True
    ) -> None:
        self.send_response(status)
        allowed = CORS if cors else []
        for name, value in [*headers, *allowed, ("content-length", str(len(body)))]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _chunked(self, body: bytes) -> None:
        self.send_response(200)
        for name, value in [("content-type", "text/plain"), *CORS]:
            self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for start in range(0, len(body), 16384):
            self._chunk(body[start : start + 16384])
        self._chunk(b"")

    def _stream(self) -> None:
        self.send_response(200)
        for name, value in [("content-type", "text/plain"), *CORS]:
            self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self._chunk(b"first part\n")
        self.server.streaming.set()
        self.server.release_stream.wait(60)
        self._chunk(b"second part\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


@contextmanager
def upstream() -> Iterator[Upstream]:
    """An ``Upstream`` serving in a thread until the block ends."""
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.release_stream.set()
        server.shutdown()
        server.server_close()
