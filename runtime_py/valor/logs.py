"""Logging through the standard ``logging`` tree.

Valor's loggers have no handlers of their own and propagate, so any ``dictConfig`` (uvicorn's
``--log-config``, a web framework's, a test runner's) decides where their records go:

- ``valor``: load failures, and plug-in tracebacks under their error id;
- ``valor.access``: one line per request (plug-in, status, method, path, time, correlation id);
- ``valor.plugins``: plug-in processes and workers;
- ``valor.plugin.<name>``: each plug-in's ``ctx.log``.

Only the commands configure logging, as uvicorn does: ``valor serve`` with ``LOGGING_CONFIG``
unless ``--log-config`` names another, ``valor call`` with warnings to stderr.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def logging_config(level: str = "info") -> dict[str, Any]:
    """``valor serve``'s default: uvicorn's own configuration, plus a handler on the root logger
    that Valor's records (and any other library's warnings) reach by propagation."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["valor"] = {"format": FORMAT}
    config["handlers"]["valor"] = {
        "class": "logging.StreamHandler",
        "formatter": "valor",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["valor"] = {"level": level.upper()}
    config["root"] = {"handlers": ["valor"], "level": "WARNING"}
    return config


def log_warnings_to_stderr() -> None:
    """For a one-shot command: warnings and errors to stderr, unless logging is configured."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
