"""Request ids and the access log: what ties a request's answer to its log lines."""

from __future__ import annotations

import logging
import os
import random
import time

access_log = logging.getLogger("valor.access")

# Request ids need to be unique, not secret: a seeded PRNG is several times cheaper than
# os.urandom, which is a system call per request.
_ids = random.Random(os.urandom(32))
_bits = _ids.getrandbits  # bound once: it stays this generator's across reseeding


def reseed_request_ids() -> None:
    """Give the request-id generator a fresh seed (after a boot from a memory snapshot)."""
    _ids.seed(os.urandom(32))


def new_request_id() -> str:
    """A random 128-bit id as 32 hex digits, for a request that came without one."""
    return _bits(128).to_bytes(16).hex()  # big-endian, the default


def log_access(
    plugin: str,
    status: int,
    method: str,
    path: str,
    started: float | None,
    correlation_id: str,
) -> None:
    """Write an answer's access-log line (when ``valor.access`` logs at INFO)."""
    elapsed = (time.perf_counter() - started) * 1000 if started is not None else 0.0
    access_log.info(
        "%s %d %s %s %.1fms %s", plugin, status, method, _printable(path), elapsed, correlation_id
    )


def _printable(text: str) -> str:
    """``text`` for a log line: control characters escaped, so a request cannot forge lines."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
