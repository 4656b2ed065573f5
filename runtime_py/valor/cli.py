"""The ``valor`` command. Each subcommand lives in the module that owns it."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

# Subcommands implemented in their own modules, each with ``main(argv) -> int``.
DELEGATED = {
    "build": ("valor.build", "bundle plug-ins into a static site for the browser host"),
    "dev": ("valor.dev", "serve the bundle and the server side by side, rebuilding on changes"),
    "call": ("valor.call", "run one request through the runtime in-process and print the answer"),
    "new": ("valor.scaffold", "scaffold a new plug-in, its manifest entry and a test"),
}

DEFAULT_MANIFEST = "plugins/plugins.json"


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
    parser = argparse.ArgumentParser(prog="valor", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = commands.add_parser("serve", help="serve plug-ins over HTTP with uvicorn")
    serve_parser.add_argument("manifest", nargs="?", default=DEFAULT_MANIFEST)
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--registry", action="store_true", help="enable /_plugins")
    serve_parser.add_argument(
        "--token",
        default=os.environ.get("VALOR_TOKEN"),
        help="bearer token for /_plugins (default: $VALOR_TOKEN, else generated and logged); "
        "visible to every user in ps: prefer --token-file or $VALOR_TOKEN",
    )
    serve_parser.add_argument(
        "--token-file", type=Path, help="read the /_plugins bearer token from this file"
    )
    serve_parser.add_argument("--strict", action="store_true", help="fail if any plug-in fails")
    serve_parser.add_argument("--reload", action="store_true", help="restart on file changes")
    serve_parser.add_argument("--max-body-size", type=int, default=10 * 1024 * 1024)
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.add_argument("--log-level", default="info")
    # Connection limits, named as uvicorn names them (see docs/security.md).
    serve_parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=None,
        help="answer 503 past this many connections and tasks (default: half the open-file limit)",
    )
    serve_parser.add_argument(
        "--timeout-keep-alive", type=float, default=5, help="close idle keep-alive connections"
    )
    serve_parser.add_argument(
        "--timeout-headers",
        type=float,
        default=10,
        help="close a connection that has not sent a whole request head in this many seconds",
    )
    serve_parser.add_argument(
        "--timeout-body",
        type=float,
        default=30,
        help="answer 408 when a request body stops arriving for this many seconds",
    )
    for name, (_, help_text) in DELEGATED.items():
        commands.add_parser(name, help=help_text, add_help=False)
    return parser


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("valor")
    if not logger.handlers:
        logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


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
        VALOR_LOG_LEVEL=args.log_level,
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
        log_level=args.log_level,
        http="valor.connections:GuardedH11Protocol",
        limit_concurrency=args.limit_concurrency or default_limit_concurrency(),
        timeout_keep_alive=args.timeout_keep_alive,
    )
    return 0


def default_limit_concurrency() -> int:
    """Half the process's open-file limit: the rest stays for plug-ins, upstreams and logs."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return max(16, min(soft, 1 << 20) // 2) if soft != resource.RLIM_INFINITY else 1 << 19


def app_from_environment():
    """Build the app from ``VALOR_*`` variables (set by ``valor serve``)."""
    from .server import create_app

    configure_logging(os.environ.get("VALOR_LOG_LEVEL", "info"))
    return create_app(
        os.environ["VALOR_MANIFEST"],
        registry=bool(os.environ.get("VALOR_REGISTRY")),
        token=os.environ.get("VALOR_TOKEN") or None,
        strict=bool(os.environ.get("VALOR_STRICT")),
        max_body_size=int(os.environ.get("VALOR_MAX_BODY_SIZE", 10 * 1024 * 1024)),
        body_timeout=float(os.environ.get("VALOR_TIMEOUT_BODY") or 30),
    )


if __name__ == "__main__":
    sys.exit(main())
