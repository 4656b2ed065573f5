import pytest

from valor import HTTPError, QueryParams, Request


def make(url="http://h/x?a=1&a=2&b=", body=None, headers=()) -> Request:
    return Request({"url": url, "method": "post", "headers": list(headers), "body": body})


def test_url_path_method_query() -> None:
    req = make(headers=[["x-forwarded-prefix", "/p"]])
    assert req.method == "POST"
    assert req.path == "/x"
    assert req.url == "http://h/x?a=1&a=2&b="
    assert req.prefix == "/p"
    assert req.query_params["a"] == "1"
    assert req.query_params.getlist("a") == ["1", "2"]
    assert req.query_params["b"] == ""
    assert "A" not in req.query_params


def test_body_text_json() -> None:
    req = make(body='{"k": "é"}'.encode())
    assert req.body == '{"k": "é"}'.encode()
    assert req.text() == '{"k": "é"}'
    assert req.json() == {"k": "é"}
    assert make(body=None).body == b""


@pytest.mark.parametrize(("body", "detail"), [(b"{", "not valid JSON"), (None, "empty")])
def test_bad_json_is_a_400(body, detail) -> None:
    with pytest.raises(HTTPError) as caught:
        make(body=body).json()
    assert caught.value.status_code == 400
    assert detail in caught.value.detail


def test_bad_utf8_is_a_400() -> None:
    with pytest.raises(HTTPError, match="UTF-8"):
        make(body=b"\xff").text()


def test_query_params_are_a_case_sensitive_immutable_multi_dict() -> None:
    params = QueryParams("a=1&A=2&a=3&b=")
    assert params["a"] == "1" and params["A"] == "2"
    assert params.getlist("a") == ["1", "3"]
    assert list(params) == ["a", "A", "b"] and len(params) == 3
    assert dict(params) == {"a": "1", "A": "2", "b": ""}
    assert params.multi_items() == [("a", "1"), ("A", "2"), ("a", "3"), ("b", "")]
    assert "A" in params and "B" not in params
    assert QueryParams([("A", "1")]) != QueryParams([("a", "1")])
    assert QueryParams([("a", "1"), ("b", "2")]) == QueryParams({"b": "2", "a": "1"})
    assert QueryParams("a=1") != QueryParams("a=1&a=1")
    assert str(params) == "a=1&A=2&a=3&b=" and repr(params) == "QueryParams('a=1&A=2&a=3&b=')"
    with pytest.raises(TypeError):
        params["a"] = "x"  # type: ignore[index]
    with pytest.raises(TypeError):
        hash(params)


def test_query_params_of_a_request_decode_the_query() -> None:
    params = make("http://h/x?q=caf%C3%A9+au+lait&Q=2").query_params
    assert isinstance(params, QueryParams)
    assert (params["q"], params["Q"]) == ("café au lait", "2")
