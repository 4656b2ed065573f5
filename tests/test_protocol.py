"""The browser's message protocol and the constants the build writes into its scripts."""

from __future__ import annotations

import hashlib
import json

import pytest

from valor import protocol
from valor.responses import error_message
from valor.status import REASONS
from valor.wire import NO_BODY


def test_each_channel_tells_its_messages_apart() -> None:
    for channel in protocol.CHANNELS:
        assert len(set(channel.values())) == len(channel), channel


def test_a_changed_message_table_comes_with_a_new_version() -> None:
    """Builds on either side of a change to the messages would misread each other: a new
    ``protocol.VERSION`` makes them refuse each other instead (then update the digest here)."""
    table = json.dumps(protocol.message_types(), sort_keys=True).encode()
    assert (protocol.VERSION, hashlib.sha256(table).hexdigest()[:12]) == (2, "21abdde69328")


def test_a_name_means_one_message_type_on_every_channel() -> None:
    types = protocol.message_types()
    for channel in protocol.CHANNELS:
        assert channel.items() <= types.items()


@pytest.mark.parametrize(("status", "detail"), [(503, "booting"), (504, "late"), (599, "ünï")])
def test_the_error_body_written_as_the_scripts_write_it_is_the_runtimes(
    status: int, detail: str
) -> None:
    shape = protocol.browser_constants()["error_body"]
    # What sw error() and the runtime worker's failure() do with the shape.
    reason = protocol.browser_constants()["reasons"].get(str(status), shape["fallback_reason"])
    fields = {
        shape["status_field"]: status,
        shape["reason_field"]: reason,
        shape["detail_field"]: detail,
    }
    answer = error_message(status, detail)
    assert list(fields.items()) == list(json.loads(answer["body"]).items())
    assert shape["headers"] == answer["headers"]


def test_the_scripts_get_the_runtimes_http_facts() -> None:
    constants = protocol.browser_constants()
    assert constants["version"] == protocol.VERSION
    assert {int(status): phrase for status, phrase in constants["reasons"].items()} == REASONS
    assert set(constants["null_body_statuses"]) == NO_BODY
    json.dumps(constants)  # written into the scripts as JSON
