"""The browser host's message protocol, defined once: the messages between the page
(``valor.js``), the service worker (``valor-sw.js``), the runtime worker (``valor-worker.js``)
and the snapshot maker (``valor-snapshot.js``), and its version.

``valor build`` writes ``browser_constants()`` into each of those files, in place of their
``/*__VALOR_PROTOCOL__*/null``: the message types, this version, and the HTTP facts the
JavaScript side needs from the Python runtime (reason phrases, statuses without a body, the
JSON error body's shape), so none of them is copied by hand. docs/browser.md describes each
message and its fields.
"""

from __future__ import annotations

import json
from typing import Any

from .responses import error_message
from .status import REASONS
from .wire import NO_BODY

VERSION = 2
"""Bump it when a message changes meaning or fields: a page, service worker or runtime worker
of another version is refused with an error naming both, instead of misreading messages."""

# Page -> service worker (postMessage to the controller), each acknowledged with ACK.
PAGE_TO_SERVICE_WORKER = {
    "CONNECT": "VALOR_CONNECT",  # {nonce, protocol, version, timeout, manifest, prefixes} + port
    "SET_PREFIXES": "VALOR_PREFIXES",  # {nonce, prefixes}: the runtime is ready
    "CLAIM": "VALOR_CLAIM",  # {nonce}: take control (after a hard reload)
    "SKIP_WAITING": "VALOR_SKIP_WAITING",  # {nonce}: activate now (an update)
}
# Service worker -> page.
SERVICE_WORKER_TO_PAGE = {
    "ACK": "VALOR_ACK",  # {nonce, protocol, version}: the service worker's protocol and build
    "NEED_PORT": "VALOR_NEED_PORT",  # {epoch}: the service worker lost this tab's port
}
# Page -> runtime worker.
PAGE_TO_RUNTIME = {
    "BOOT": "boot",  # {protocol, base, manifest, version}: start the runtime
    "PORT": "port",  # + ports[0]: the service worker's end of this tab's channel
    "PING": "ping",  # are you responsive?
    "RESET": "reset",  # {stage}: "stop" closes the runtime, "start" starts a fresh one
}
# Runtime worker -> page.
RUNTIME_TO_PAGE = {
    "STATUS": "status",  # {protocol, status, ...}: booting | ready | error
    "LOADED": "loaded",  # {plugins, failures, ...}: every plug-in loaded or failed
    "SNAPSHOT": "snapshot",  # {kept, error}: one made in this browser is kept
    "PONG": "pong",
    "PREFIXES": "prefixes",  # {prefixes}: after /_plugins changed the mounts
    "LOGGED": "error",  # {error: {message, error_id, traceback}}
    "RESET": "reset",  # {stage, error?}: that stage of a reset is done
}
# Service worker -> runtime worker, on the tab's port.
SERVICE_WORKER_TO_RUNTIME = {
    "REQUEST": "request",  # {id, url, method, headers, body}: headers as CRLF-joined lines
    "PULL": "pull",  # {id}: the next part of a streamed answer
    "CANCEL": "cancel",  # {id}: the page dropped a streamed answer
}
# Runtime worker -> service worker, on the tab's port.
RUNTIME_TO_SERVICE_WORKER = {
    "RESPONSE": "response",  # {id, status, reason, headers, body, stream?}: body transferred
    "PART": "part",  # {id, body}: a streamed answer's part, per pull
    "END": "end",  # {id}: a streamed answer is complete
    "STREAM_ERROR": "error",  # {id, detail}: a streamed answer failed
    "STATUS": "status",  # {status}
    "PREFIXES": "prefixes",  # {prefixes}
}
# Snapshot maker -> runtime worker (the maker's one message in is its options).
SNAPSHOT_MAKER_TO_RUNTIME = {
    "KEPT": "kept",  # {bytes}
    "FAILED": "failed",  # {error}
}
CHANNELS = (
    PAGE_TO_SERVICE_WORKER,
    SERVICE_WORKER_TO_PAGE,
    PAGE_TO_RUNTIME,
    RUNTIME_TO_PAGE,
    SERVICE_WORKER_TO_RUNTIME,
    RUNTIME_TO_SERVICE_WORKER,
    SNAPSHOT_MAKER_TO_RUNTIME,
)


def message_types() -> dict[str, str]:
    """Every message type by name. A name used on two channels (``STATUS``) means the same."""
    return {name: value for channel in CHANNELS for name, value in channel.items()}


def error_body_shape() -> dict[str, Any]:
    """How the JavaScript side writes the runtime's JSON error body, read off
    ``responses.error_message`` (a status without a phrase shows the fallback reason)."""
    answer = error_message(599, "")
    status_field, reason_field, detail_field = json.loads(answer["body"])
    return {
        "headers": answer["headers"],
        "status_field": status_field,
        "reason_field": reason_field,
        "detail_field": detail_field,
        "fallback_reason": json.loads(answer["body"])[reason_field],
    }


def browser_constants() -> dict[str, Any]:
    """What the build writes into the browser's JavaScript files."""
    return {
        "version": VERSION,
        "types": message_types(),
        "reasons": {str(status): phrase for status, phrase in sorted(REASONS.items())},
        "null_body_statuses": sorted(NO_BODY),
        "error_body": error_body_shape(),
    }
