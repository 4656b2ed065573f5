"""Waiting on a condition, not on the clock: on a busy machine things come late, not wrong."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float, what: str = "the condition") -> None:
    """Return once ``condition()`` is true; fail, naming ``what``, after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not so within {timeout:g} s"
        time.sleep(0.02)
