"""CGI as WAGI does it, for WASI plug-ins: the request as environment variables, the answer
parsed from stdout. Pure Python, shared by the server and browser hosts.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from ...wire import RequestMessage, ResponseMessage

_SKIPPED = {"content-type", "content-length", "authorization"}


class CgiError(ValueError):
    """Output from a WASI program that is not a CGI answer."""


def cgi_environ(message: RequestMessage) -> dict[str, str]:
    """The CGI environment for a request (``PATH_INFO`` is the path below the mount prefix)."""
    url = urlsplit(message["url"])
    headers = message["headers"]
    body = message.get("body") or b""

    def header(name: str) -> str:
        return next((v for n, v in headers if n.lower() == name), "")

    prefix = header("x-forwarded-prefix")
    environ = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_SOFTWARE": "valor",
        "REQUEST_METHOD": message["method"],
        "SCRIPT_NAME": prefix,
        "PATH_INFO": url.path or "/",
        "QUERY_STRING": url.query,
        "REQUEST_URI": prefix + (url.path or "/") + (f"?{url.query}" if url.query else ""),
        "SERVER_NAME": url.hostname or "",
        "SERVER_PORT": str(url.port or (443 if url.scheme == "https" else 80)),
        "X_FULL_URL": message["url"],
        "X_MATCHED_ROUTE": prefix or "/",
        "CONTENT_TYPE": header("content-type"),
        "CONTENT_LENGTH": str(len(body)) if body else header("content-length"),
    }
    for name, value in headers:
        if name.lower() in _SKIPPED:
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        # Repeated headers are joined, as a CGI server does.
        environ[key] = f"{environ[key]}, {value}" if key in environ else value
    return environ


def parse_cgi_output(output: bytes) -> ResponseMessage:
    """Headers, a blank line and the body; ``Status:`` sets the status (default 200, or 302
    with only a ``Location``)."""
    end, gap = _header_end(output)
    if end < 0:
        raise CgiError("the program wrote no header block (headers, then a blank line)")
    status: int | None = None
    headers: list[list[str]] = []
    for line in output[:end].decode("latin-1").splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise CgiError(f"bad header line {line!r}")
        name, value = name.strip(), value.strip()
        if name.lower() == "status":
            code = value.split(" ", 1)[0]
            if not code.isdigit() or not 100 <= int(code) <= 599:
                raise CgiError(f"bad Status header {value!r}")
            status = int(code)
        else:
            headers.append([name.lower(), value])
    if status is None:
        status = 302 if any(n == "location" for n, _ in headers) else 200
    return {"status": status, "headers": headers, "body": output[end + gap :]}


def _header_end(output: bytes) -> tuple[int, int]:
    crlf, lf = output.find(b"\r\n\r\n"), output.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return lf, 2
