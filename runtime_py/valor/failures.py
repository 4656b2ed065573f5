"""The one place where a plug-in's failure becomes an answer, in both hosts.

Loaders raise ``PluginFailed`` for a failure of the plug-in's own (a trap, an exit code, a bad
answer, an unreachable upstream) and ``reported_failure`` for what a helper process or worker
reports; the runtime (and the server's pass-through) turn whatever a call raised into its
answer with ``failure_answer``. A failure the client should not read the cause of (a crash, a
bug) is logged with its traceback under an error id (``new_error_id``), which the answer
carries; a streamed answer that breaks after its head is a logged ``StreamError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import TYPE_CHECKING

from .concurrency import PluginBusy
from .deadlines import DeadlineExceeded
from .errors import PluginCrashed
from .responses import error_message
from .store import StoreError, StoreUnavailable
from .streaming import StreamError
from .wire import ResponseMessage, WireError

if TYPE_CHECKING:
    from .manifest import PluginSpec

log = logging.getLogger("valor")
plugins_log = logging.getLogger("valor.plugins")


def new_error_id() -> str:
    """12 random hex digits: what ties an answer (or a cut stream) to its lines in the log."""
    return os.urandom(6).hex()


class PluginFailed(Exception):
    """Raised by a loader; ``answer()`` is the error response the runtime sends."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def answer(self) -> ResponseMessage:
        """The JSON error answer; a 500 carries an ``error_id`` that is also in the log."""
        if self.status != 500:
            plugins_log.warning("%s", self.detail)
            return error_message(self.status, self.detail)
        error_id = new_error_id()
        plugins_log.error("%s [error_id=%s]", self.detail, error_id)
        return error_message(500, self.detail, error_id=error_id)


def reported_failure(name: str, error: object, crashed: bool) -> Exception:
    """What a plug-in's process or worker reported instead of an answer (js and native, in
    both hosts): a crash (502; it is restarted; why goes to the log only, see
    ``failure_answer``) or a failure (500) in the host's own words (an answer that is not a
    response, a return code), which the client reads."""
    if crashed:
        return PluginCrashed(str(error))
    return PluginFailed(500, f"plug-in {name!r} failed: {error}")


def failure_answer(spec: PluginSpec, exc: BaseException, expired: bool) -> ResponseMessage:
    """The answer for a plug-in call that raised ``exc`` before answering (called while
    handling it); ``expired``: its deadline had passed. Re-raises what is not a failure of the
    plug-in's (the host's own cancellation, KeyboardInterrupt)."""
    if isinstance(exc, DeadlineExceeded) or (expired and isinstance(exc, asyncio.CancelledError)):
        return timed_out(spec)
    if not isinstance(exc, Exception):
        raise exc
    if isinstance(exc, TimeoutError):  # its own, say an upstream's: the same 504
        return timed_out(spec)
    if isinstance(exc, PluginFailed):  # a trap, an exit code, a bad answer, no upstream
        return exc.answer()
    if isinstance(exc, StoreUnavailable):  # 503, or 507 when it is full
        log.error("plug-in %r: %s", spec.name, exc)
        return error_message(exc.status, f"plug-in {spec.name!r}: {exc}", store=exc.store)
    if isinstance(exc, PluginBusy):
        log.warning("%s", exc)
        return error_message(503, str(exc))
    if isinstance(exc, PluginCrashed):
        # Why it crashed (its last stderr line, its error's message) may quote a secret:
        # it goes to the log, under the error id the client gets, as a 500's traceback.
        error_id = new_error_id()
        log.error("plug-in %r crashed: %s [error_id=%s]", spec.name, exc, error_id)
        return error_message(502, f"plug-in {spec.name!r} crashed", error_id=error_id)
    if isinstance(exc, WireError):
        return _logged(f"plug-in {spec.name!r} answered an invalid response: {exc}")
    return _logged(f"plug-in {spec.name!r} raised an error")


def timed_out(spec: PluginSpec) -> ResponseMessage:
    """The 504 of a plug-in that did not answer within its ``timeout``."""
    log.warning("plug-in %r did not answer within %gs", spec.name, spec.timeout)
    return error_message(
        504, f"plug-in {spec.name!r} did not answer within {spec.timeout:g} seconds"
    )


def _logged(detail: str) -> ResponseMessage:
    """A 500 naming ``detail``; the exception being handled goes to the log, under its id."""
    error_id = new_error_id()
    log.exception("%s [error_id=%s]", detail, error_id)
    return error_message(500, detail, error_id=error_id)


def registry_store_failure(exc: StoreError) -> ResponseMessage:
    """The answer of a ``/_plugins`` change the store could not record (nothing changed)."""
    if isinstance(exc, StoreUnavailable):
        return error_message(exc.status, f"the registry: {exc}", store=exc.store)
    return error_message(500, f"the registry could not record the change: {exc}")


def idle_error(plugin: str, idle: float) -> StreamError:
    """The error (logged here) of a stream that sent no part for ``idle`` seconds."""
    return _stream_error(f"plug-in {plugin!r} sent no part of its stream for {idle:g} seconds")


def broken_error(plugin: str, cause: BaseException) -> StreamError:
    """The error (logged here) of a stream whose plug-in raised ``cause`` between parts."""
    return _stream_error(f"plug-in {plugin!r} failed in the middle of its stream", cause)


def _stream_error(detail: str, cause: BaseException | None = None) -> StreamError:
    error_id = new_error_id()
    log.error("%s [error_id=%s]", detail, error_id, exc_info=cause)
    return StreamError(f"{detail} [error_id={error_id}]")


def failed_after_answer(plugin: str, description: str, exc: BaseException) -> None:
    """Log an error a plug-in raised after its whole answer was sent, under an error id, with
    its traceback (the client has its answer; only the log can tell)."""
    plugins_log.error(
        "plug-in %r failed after its answer: %s [error_id=%s]",
        plugin,
        description,
        new_error_id(),
        exc_info=exc,
    )
