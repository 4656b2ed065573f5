"""``valor call``: run one request through the runtime in-process and print the answer.

    valor call plugins/plugins.json GET /hello
    valor call plugins/plugins.json POST /notes --json '{"text": "buy milk"}'
    valor call plugins/plugins.json PUT /echo --data @photo.png -H 'Content-Type: image/png'

Prints the status line, the headers and the body, like ``curl -i``. Exits 0 for any answer below
500, 1 for a 5xx answer, 2 when the manifest or the arguments are not usable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from .errors import ManifestError, PluginLoadError
from .logs import log_warnings_to_stderr
from .manifest import Manifest, load_manifest
from .status import reason
from .streaming import StreamError, complete
from .wire import RequestMessage, ResponseMessage

BASE_URL = "http://localhost"


class UsageError(Exception):
    """Arguments that cannot make a request; reported with exit code 2."""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        manifest = load_manifest(args.manifest)
        message = build_request(args.method, args.path, args.header, args.data, args.json)
    except (ManifestError, UsageError) as exc:
        print(f"valor call: {exc}", file=sys.stderr)
        return 2
    log_warnings_to_stderr()  # load failures and tracebacks: stdout holds only the answer
    try:
        response = asyncio.run(call(manifest, message, strict=args.strict))
    except PluginLoadError as exc:
        print(f"valor call: {exc}", file=sys.stderr)
        return 2
    except StreamError as exc:
        print(f"valor call: {exc}", file=sys.stderr)
        return 1
    write_response(response, body_only=args.body_only)
    return 1 if response["status"] >= 500 else 0


async def call(
    manifest: Manifest, message: RequestMessage, strict: bool = False
) -> ResponseMessage:
    """Load ``manifest`` with the server host's loaders, answer ``message``, unload."""
    from .runtime import Runtime
    from .server import SERVER_LOADERS

    runtime = Runtime(SERVER_LOADERS)
    try:
        await runtime.load(manifest, strict=strict)  # failures are logged; the others load
        return await complete(await runtime.handle(message))
    finally:
        await runtime.close()


def build_request(
    method: str,
    path: str,
    headers: list[str] | None = None,
    data: str | None = None,
    json_data: str | None = None,
) -> RequestMessage:
    """The wire request for the command line's arguments."""
    if not path.startswith("/"):
        raise UsageError(f"PATH must start with '/', got {path!r}")
    pairs = [_header(line) for line in headers or []]
    body: bytes | None = None
    if data is not None and json_data is not None:
        raise UsageError("give --data or --json, not both")
    if data is not None:
        body = _read_data(data)
    elif json_data is not None:
        body = _read_data(json_data)
        try:
            json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UsageError(f"--json is not valid JSON: {exc}") from None
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(["content-type", "application/json"])
    return {"url": BASE_URL + path, "method": method.upper(), "headers": pairs, "body": body}


def write_response(response: ResponseMessage, body_only: bool = False) -> None:
    """Print like ``curl -i``: status line, headers, a blank line, the body."""
    out = sys.stdout
    if not body_only:
        status = response["status"]
        out.write(f"HTTP {status} {reason(status)}".rstrip() + "\n")
        for name, value in response["headers"]:
            out.write(f"{name}: {value}\n")
        out.write("\n")
    body = response["body"]
    try:
        out.write(body.decode("utf-8"))
    except UnicodeDecodeError:  # binary: hand the bytes over as they are
        out.flush()
        out.buffer.write(body)
    if body and not body_only and not body.endswith(b"\n"):
        out.write("\n")
    out.flush()


def _header(line: str) -> list[str]:
    name, colon, value = line.partition(":")
    if not colon or not name.strip():
        raise UsageError(f"a header must look like 'Name: value', got {line!r}")
    return [name.strip().lower(), value.strip()]  # as both hosts hand names over


def _read_data(data: str) -> bytes:
    if not data.startswith("@"):
        return data.encode("utf-8")
    if data == "@-":
        return sys.stdin.buffer.read()
    try:
        return Path(data[1:]).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {data[1:]!r}: {exc.strerror}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="valor call",
        description="Run one request through the runtime in-process and print the answer.",
        epilog="Exit status: 0 below 500, 1 on a 5xx answer, 2 on a bad manifest or arguments.",
    )
    parser.add_argument("manifest", metavar="MANIFEST", help="the manifest, e.g. plugins.json")
    parser.add_argument("method", metavar="METHOD", help="GET, POST, ...")
    parser.add_argument("path", metavar="PATH", help="path and query, e.g. '/greeter?who=Bob'")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("-d", "--data", help="request body; @FILE reads a file, @- stdin")
    body.add_argument(
        "--json", help="JSON request body (or @FILE); sets content-type: application/json"
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="request header, repeatable",
    )
    parser.add_argument("-b", "--body-only", action="store_true", help="print only the body")
    parser.add_argument(
        "--strict", action="store_true", help="exit 2 if any plug-in of the manifest fails to load"
    )
    return parser
