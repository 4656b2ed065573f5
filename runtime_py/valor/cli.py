"""Valor runs HTTP plug-ins (Python, JavaScript, WebAssembly, WASI, native, proxies) on a
server and, unchanged, in the browser. Every command takes the manifest, a JSON file listing
the plug-ins (default: plugins/plugins.json)."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

# Each subcommand but serve lives in the module that owns it, with ``main(argv) -> int``.
DELEGATED = {
    "build": ("valor.build", "bundle plug-ins into a static site for the browser host"),
    "dev": ("valor.dev", "serve the bundle and the server side by side, rebuilding on changes"),
    "call": ("valor.call", "run one request through the runtime in-process and print the answer"),
    "new": ("valor.scaffold", "scaffold a new plug-in, its manifest entry and a test"),
    "registry": ("valor.registry", "show or reset the /_plugins changes kept in the store"),
}

DEFAULT_MANIFEST = "plugins/plugins.json"
DEFAULT_GRACE = 10.0
"""Seconds ``valor serve`` waits on SIGTERM for answers in flight, as gunicorn's
``--graceful-timeout`` (30 there; streams make a long wait the common case here)."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        module = importlib.import_module(DELEGATED[argv[0]][0])
        return int(module.main(argv[1:]) or 0)
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    parser.print_help()
    return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="valor",
        description=__doc__,
        epilog="`valor COMMAND --help` describes a command's options.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="serve plug-ins over HTTP with uvicorn",
        description="Serve the manifest's plug-ins over HTTP with uvicorn. Options named as "
        "uvicorn's mean what they mean there.",
    )
    _add_manifest_options(serve_parser)
    _add_deployment_options(serve_parser)
    _add_stack_options(serve_parser)
    _add_connection_limits(serve_parser)
    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def _add_manifest_options(parser: argparse.ArgumentParser) -> None:
    """What to serve: the manifest, its registry, its store."""
    parser.add_argument(
        "manifest",
        nargs="?",
        default=DEFAULT_MANIFEST,
        metavar="MANIFEST",
        help="the manifest: a JSON file listing the plug-ins, their paths relative to it "
        f"(default: {DEFAULT_MANIFEST})",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default: 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port to bind (default: 8000)")
    parser.add_argument("--registry", action="store_true", help="enable /_plugins, behind --token")
    parser.add_argument(
        "--token",
        default=os.environ.get("VALOR_TOKEN"),
        help="bearer token for /_plugins (default: $VALOR_TOKEN, else generated and logged); "
        "visible to every user in ps: prefer --token-file or $VALOR_TOKEN",
    )
    parser.add_argument(
        "--token-file", type=Path, help="read the /_plugins bearer token from this file"
    )
    parser.add_argument(
        "--strict", action="store_true", help="refuse to start if any plug-in fails to load"
    )
    parser.add_argument(
        "--reload", action="store_true", help="restart when the manifest's folder changes"
    )
    parser.add_argument(
        "--max-body-size",
        type=int,
        default=10 * 1024 * 1024,
        metavar="BYTES",
        help="larger request bodies answer 413 (default: 10485760, 10 MiB)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes sharing the port (default: 1)",
    )
    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get("VALOR_STORE"),
        help="the plug-ins' store: sqlite:///PATH (or a path), redis://HOST:PORT/DB or memory: "
        '(default: $VALOR_STORE, else the manifest\'s "store", else valor-store.sqlite3 '
        "beside the manifest)",
    )


def _add_stack_options(parser: argparse.ArgumentParser) -> None:
    """The server's stack, chosen as uvicorn chooses it, and the origins it lets in."""
    parser.add_argument(
        "--cors",
        metavar="ORIGIN",
        action="append",
        default=[],
        help="let pages of ORIGIN (a bundle built with --fallback) call this server; repeatable",
    )
    parser.add_argument(
        "--http",
        choices=["auto", "httptools", "h11"],
        default="auto",
        help="HTTP/1.1 protocol: httptools (C, llhttp) or h11 (pure Python); both keep the "
        "limits below (default: auto, httptools where it is installed)",
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="event loop (default: auto, uvloop where it is installed)",
    )


def _add_connection_limits(parser: argparse.ArgumentParser) -> None:
    """Connection limits, named as uvicorn names them (see docs/security.md)."""
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=None,
        help="answer 503 past this many connections and tasks (default: half the open-file limit)",
    )
    parser.add_argument(
        "--timeout-keep-alive", type=float, default=5, help="close idle keep-alive connections"
    )
    parser.add_argument(
        "--timeout-headers",
        type=float,
        default=10,
        help="close a connection that has not sent a whole request head in this many seconds",
    )
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=float,
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for answers in flight (streams included), then cut "
        f"them off (default: {DEFAULT_GRACE:g})",
    )
    parser.add_argument(
        "--timeout-body",
        type=float,
        default=30,
        help="answer 408 when a request body stops arriving for this many seconds",
    )


def _add_deployment_options(parser: argparse.ArgumentParser) -> None:
    """uvicorn's deployment options, passed through under uvicorn's names."""
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        default=None,
        help="log level of Valor's and uvicorn's loggers; info logs one access line per "
        "request (default: info, or what --log-config says)",
    )
    parser.add_argument(
        "--log-config",
        metavar="FILE",
        help="logging configuration for the standard logging module, as uvicorn's: a .json "
        "or .yaml dictConfig, else an .ini fileConfig (default: Valor's access lines and "
        "warnings to stderr)",
    )
    parser.add_argument(
        "--root-path",
        default="",
        metavar="PATH",
        help="the path prefix a proxy serves the app under, the ASGI root_path (default: none)",
    )
    parser.add_argument(
        "--proxy-headers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="trust X-Forwarded-Proto and X-Forwarded-For from --forwarded-allow-ips (default: on)",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="comma-separated addresses (or *) whose proxy headers to trust "
        "(default: $FORWARDED_ALLOW_IPS, else 127.0.0.1)",
    )
    parser.add_argument("--uds", metavar="PATH", help="bind to this Unix domain socket instead")
    parser.add_argument("--ssl-keyfile", metavar="FILE", help="TLS private key (PEM)")
    parser.add_argument("--ssl-certfile", metavar="FILE", help="TLS certificate chain (PEM)")


def _deployment_options(args: argparse.Namespace) -> dict[str, Any]:
    """``uvicorn.run`` keywords for the options ``_add_deployment_options`` adds."""
    from .logs import logging_config

    return {
        "log_config": args.log_config or logging_config(args.log_level or "info"),
        "log_level": args.log_level,
        "root_path": args.root_path,
        "proxy_headers": args.proxy_headers,
        "forwarded_allow_ips": args.forwarded_allow_ips,
        "uds": args.uds,
        "ssl_keyfile": args.ssl_keyfile,
        "ssl_certfile": args.ssl_certfile,
    }


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    manifest = Path(args.manifest)
    if not manifest.is_file():
        print(f"valor: manifest not found: {manifest}", file=sys.stderr)
        return 2
    # uvicorn re-imports the app in reloader and worker processes, so settings travel in the
    # environment and the app is built by a factory.
    os.environ.update(
        VALOR_MANIFEST=str(manifest.resolve()),
        VALOR_REGISTRY="1" if args.registry else "",
        VALOR_STRICT="1" if args.strict else "",
        VALOR_MAX_BODY_SIZE=str(args.max_body_size),
        VALOR_LOG_LEVEL=args.log_level or "",
        VALOR_CORS=" ".join(args.cors),
        VALOR_STORE=args.store or "",  # a relative path: the current folder's, in each worker
    )
    if args.token_file is not None:
        try:
            args.token = args.token_file.read_text().strip()
        except OSError as exc:
            print(f"valor: cannot read --token-file: {exc.strerror}", file=sys.stderr)
            return 2
    elif args.token and args.token != os.environ.get("VALOR_TOKEN"):
        print("valor: --token is visible in ps; prefer --token-file", file=sys.stderr)
    os.environ.update(
        VALOR_TIMEOUT_HEADERS=str(args.timeout_headers),
        VALOR_TIMEOUT_BODY=str(args.timeout_body),
    )
    try:
        http, loop = server_stack(args.http, args.loop)
    except LookupError as exc:
        print(f"valor: {exc}", file=sys.stderr)
        return 2
    if args.registry:
        if not args.token:
            import secrets

            args.token = secrets.token_urlsafe(24)
            print(f"valor: registry token for this run: {args.token}", file=sys.stderr)
        os.environ["VALOR_TOKEN"] = args.token
    uvicorn.run(
        "valor.cli:app_from_environment",
        factory=True,
        host=args.host,
        port=args.port,
        reload=args.reload,
        reload_dirs=[str(manifest.resolve().parent)] if args.reload else None,
        reload_includes=["*.py", "*.json", "*.js", "*.wasm", "*.so"] if args.reload else None,
        workers=args.workers if not args.reload else None,
        access_log=False,  # Valor writes its own access line, with plug-in and correlation id
        **_deployment_options(args),
        http=http,
        loop=loop,
        limit_concurrency=args.limit_concurrency or default_limit_concurrency(),
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )
    _leave_stuck_threads()
    return 0


def server_stack(http: str, loop: str) -> tuple[type, str]:
    """The protocol class (the head limits of ``valor.connections`` on uvicorn's) and the
    event loop uvicorn runs, for ``--http`` and ``--loop``. ``auto`` takes httptools and uvloop
    where they are installed (they have no wheels for some platforms) and says so when it
    falls back. ``LookupError`` for one asked for by name that is not installed."""
    import importlib.util

    from . import connections  # after VALOR_TIMEOUT_HEADERS is set: its classes read it

    if http == "auto" and not connections.HTTPTOOLS:
        print("valor: httptools is not installed; serving HTTP with h11", file=sys.stderr)
        http = "h11"
    if http in ("auto", "httptools"):
        if not connections.HTTPTOOLS:
            raise LookupError("--http httptools: httptools is not installed")
        protocol: type = connections.GuardedHttpToolsProtocol
    else:
        protocol = connections.GuardedH11Protocol
    has_uvloop = importlib.util.find_spec("uvloop") is not None
    if loop == "auto":
        if not has_uvloop:
            print("valor: uvloop is not installed; running on asyncio's loop", file=sys.stderr)
        loop = "uvloop" if has_uvloop else "asyncio"
    elif loop == "uvloop" and not has_uvloop:
        raise LookupError("--loop uvloop: uvloop is not installed")
    return protocol, loop


def _leave_stuck_threads() -> None:
    """End the process now if plug-in code still holds threads (a sync handler or generator
    that blocks): Python would wait for them at exit, so a stop would never end. Their calls
    were cut off already; nothing of theirs is left to answer."""
    import threading

    stuck = [
        thread
        for thread in threading.enumerate()
        if thread.name.startswith("valor-") and not thread.daemon and thread.is_alive()
    ]
    if stuck:
        logging.getLogger("valor").warning(
            "%d plug-in thread(s) still running at exit; not waiting for them", len(stuck)
        )
        logging.shutdown()
        os._exit(0)


def default_limit_concurrency() -> int:
    """Half the process's open-file limit: the rest stays for plug-ins, upstreams and logs."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(16, min(soft, 1 << 20) // 2) if soft != resource.RLIM_INFINITY else 1 << 19


def app_from_environment():
    """Build the app from ``VALOR_*`` variables (set by ``valor serve``)."""
    from .server import create_app

    level = os.environ.get("VALOR_LOG_LEVEL")
    if level:  # no handler here: the logging configuration decides where records go
        logging.getLogger("valor").setLevel(level.upper())
    app = create_app(
        os.environ["VALOR_MANIFEST"],
        registry=bool(os.environ.get("VALOR_REGISTRY")),
        token=os.environ.get("VALOR_TOKEN") or None,
        strict=bool(os.environ.get("VALOR_STRICT")),
        max_body_size=int(os.environ.get("VALOR_MAX_BODY_SIZE", 10 * 1024 * 1024)),
        body_timeout=float(os.environ.get("VALOR_TIMEOUT_BODY") or 30),
        passthrough=os.environ.get("VALOR_PASSTHROUGH") != "0",
        store=os.environ.get("VALOR_STORE") or None,
    )
    origins = os.environ.get("VALOR_CORS", "").split()
    if origins:
        from .cors import CorsMiddleware

        return CorsMiddleware(app, origins)
    return app


if __name__ == "__main__":
    sys.exit(main())
