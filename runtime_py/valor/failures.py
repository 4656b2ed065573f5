"""How loaders report a failure of a plug-in while it answers: a trap, an exit code, a bad
answer, an unreachable upstream. Loaders raise it; the runtime answers it (``Runtime._failed``,
the one place failures become answers), like its own errors."""

from __future__ import annotations

import logging
import uuid

from .errors import PluginCrashed
from .responses import error_message
from .wire import ResponseMessage

log = logging.getLogger("valor.plugins")


class PluginFailed(Exception):
    """Raised by a loader; ``answer()`` is the error response the runtime sends."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def answer(self) -> ResponseMessage:
        """The JSON error answer; a 500 carries an ``error_id`` that is also in the log."""
        if self.status != 500:
            log.warning("%s", self.detail)
            return error_message(self.status, self.detail)
        error_id = uuid.uuid4().hex[:12]
        log.error("%s [error_id=%s]", self.detail, error_id)
        return error_message(500, self.detail, error_id=error_id)


def reported_failure(name: str, error: object, crashed: bool) -> Exception:
    """What a plug-in's process or worker reported instead of an answer (js and native, in
    both hosts): a crash (502; it is restarted; why goes to the log only, see
    ``Runtime._failed``) or a failure (500) in the host's own words (an answer that is not a
    response, a return code), which the client reads."""
    if crashed:
        return PluginCrashed(str(error))
    return PluginFailed(500, f"plug-in {name!r} failed: {error}")
