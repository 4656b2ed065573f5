"""``valor.store.codec``: what an increment makes of stored values that are not integers,
as a database file edited by hand may hold; values decoded from a view."""

from __future__ import annotations

import pytest

from valor.store import NotAnInteger, codec
from valor.store.codec import encode_integer, incremented


@pytest.mark.parametrize("body", [b"--5", b"-", b"", b"1.5", b"+5", b" 5", b"5-", b'"5"'])
def test_a_stored_value_that_is_not_an_integer_is_not_incremented(body: bytes) -> None:
    with pytest.raises(NotAnInteger, match="'hits'"):
        incremented(b"j" + body, 1, "hits")


def test_integers_and_an_absent_value_add_up() -> None:
    assert incremented(None, 3, "hits") == (encode_integer(3), 3)
    assert incremented(b"j-5", 2, "hits") == (encode_integer(-3), -3)
    assert incremented(b"j41", 1, "hits") == (b"j42", 42)


@pytest.mark.parametrize(
    "encoded",
    [
        codec.encode({"text": "é😀", "n": [1, 2.5, None]}, "k"),
        codec.encode(b"\x00\xff", "k"),
        b'j {"a": 1} ',  # not encode's compact text: the long way
        b'j"\xed\xa0\x80"',  # a lone surrogate, as JavaScript may have written it
    ],
)
def test_a_value_decodes_the_same_from_a_view(encoded: bytes) -> None:
    view = memoryview(bytearray(encoded) + b"after")[: len(encoded)]
    assert codec.decode(view) == codec.decode(encoded)
    assert type(codec.decode(view)) is type(codec.decode(encoded))
