from valor.headers import Headers


def test_lookup_is_case_insensitive_and_keeps_order_and_repeats() -> None:
    headers = Headers([["Accept", "a"], ["X-Thing", "1"], ["accept", "b"]])
    assert headers["ACCEPT"] == "a"
    assert headers.getlist("accept") == ["a", "b"]
    assert "x-thing" in headers
    assert list(headers) == ["accept", "x-thing"]
    assert len(headers) == 2
    assert headers.raw() == [["Accept", "a"], ["X-Thing", "1"], ["accept", "b"]]
    assert headers.get("missing") is None


def test_from_a_mapping() -> None:
    assert Headers({"A": "1"})["a"] == "1"
