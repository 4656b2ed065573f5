import pytest

from valor import HTTPError, Request


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
    assert caught.value.status == 400
    assert detail in caught.value.detail


def test_bad_utf8_is_a_400() -> None:
    with pytest.raises(HTTPError, match="UTF-8"):
        make(body=b"\xff").text()
