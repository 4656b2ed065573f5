"""The memory snapshot's file: the heap without its pages of zeros, and back."""

from __future__ import annotations

import pytest

from valor import snapshot


def test_pages_of_zeros_are_left_out_and_come_back() -> None:
    page = snapshot.PAGE
    heap = b"\1" * page + bytes(3 * page) + b"tail" + bytes(page - 4) + b"\2" * 100
    packed = snapshot.pack(heap)
    assert len(packed) < 2 * page + 200  # two pages and the short last one are stored
    assert snapshot.unpack(packed) == heap


def test_a_heap_of_zeros_and_an_empty_heap() -> None:
    for heap in (bytes(5 * snapshot.PAGE), b""):
        assert snapshot.unpack(snapshot.pack(heap)) == heap


def test_something_else_is_refused() -> None:
    with pytest.raises(ValueError, match="not a packed memory snapshot"):
        snapshot.unpack(b"\0asm" + bytes(100))
