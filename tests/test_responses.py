import json

import pytest

from valor import HTTPError, Response
from valor.responses import to_message


@pytest.mark.parametrize(
    ("result", "status", "content_type", "body"),
    [
        ("hi", 200, "text/plain; charset=utf-8", b"hi"),
        (b"\x00\x01", 200, "application/octet-stream", b"\x00\x01"),
        ({"a": 1}, 200, "application/json", b'{"a": 1}'),
        ([1, 2], 200, "application/json", b"[1, 2]"),
        (None, 204, None, b""),
        (("made", 201), 201, "text/plain; charset=utf-8", b"made"),
    ],
)
def test_handler_results(result, status, content_type, body) -> None:
    message = to_message(result)
    assert message["status"] == status
    assert dict(message["headers"]).get("content-type") == content_type
    assert message["body"] == body


def test_tuple_with_headers_and_explicit_response() -> None:
    message = to_message(({"ok": True}, 202, {"x-a": "1"}))
    assert message["status"] == 202
    assert ["x-a", "1"] in message["headers"]
    assert json.loads(message["body"]) == {"ok": True}
    custom = Response("<b>", headers={"Content-Type": "text/html"}, status=418).message()
    assert custom["headers"] == [["Content-Type", "text/html"]]
    assert custom["status"] == 418


def test_unsupported_results_say_what_is_allowed() -> None:
    with pytest.raises(TypeError, match="None, an iterator of parts to stream, or a Response"):
        to_message(3.5)
    with pytest.raises(TypeError, match=r"\(body, status\)"):
        to_message(("x", "201"))


def test_status_code_as_in_starlette_and_the_old_status_still_works() -> None:
    assert Response("made", status_code=201).status_code == 201
    assert Response("made", 201).message()["status"] == 201
    assert Response("x").status_code == 200
    old = Response("made", status=202)
    assert (old.status_code, old.status, old.message()["status"]) == (202, 202, 202)
    assert repr(old) == "Response(status_code=202, body=b'made')"
    with pytest.raises(TypeError, match="status_code=201 and status=202: give one"):
        Response("x", status_code=201, status=202)


def test_http_error_status_code() -> None:
    error = HTTPError(404, "no such note", headers={"x-a": "1"})
    assert (error.status_code, error.status, error.detail) == (404, 404, "no such note")
    assert str(error) == "404: no such note"
    assert HTTPError(status_code=418).detail == "I'm a Teapot"
    assert HTTPError(status=409).status_code == 409
    with pytest.raises(TypeError, match="HTTPError\\(\\) needs a status_code"):
        HTTPError()


def test_public_exceptions_are_exported() -> None:
    import valor
    from valor import errors

    for name in ("HTTPError", "ManifestError", "PluginLoadError", "PluginCrashed"):
        assert getattr(valor, name) is getattr(errors, name)
        assert name in valor.__all__
