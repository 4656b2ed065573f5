"""What an app hands to a thread runs inline once ``run_threads_inline`` is set, as the browser
host sets it at boot (Pyodide has no threads): FastAPI's plain ``def`` endpoints and
dependencies, Starlette's sync iterators, background tasks. The browser's own proof is the
shared asgi table in Chromium (``tests/browser/test_asgi.py``, ``plugins/readinglist``)."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator

import anyio.to_thread
import pytest
from fastapi import Depends, FastAPI
from fastapi.responses import StreamingResponse
from starlette.testclient import TestClient

from valor import threadless

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def inline() -> Iterator[None]:
    original = anyio.to_thread.run_sync
    assert threadless.run_threads_inline() is True
    try:
        yield
    finally:
        anyio.to_thread.run_sync = original


def test_sync_endpoints_dependencies_and_iterators_run_on_the_loops_thread(inline: None) -> None:
    app = FastAPI()
    seen: dict[str, int] = {}

    def dependency() -> int:
        seen["dependency"] = threading.get_ident()
        return 1

    @app.get("/")
    def endpoint(one: int = Depends(dependency)) -> dict:
        seen["endpoint"] = threading.get_ident()
        return {"one": one}

    @app.get("/rows")
    def rows() -> StreamingResponse:
        def lines():
            seen["iterator"] = threading.get_ident()
            yield from ("a\n", "b\n")

        return StreamingResponse(lines())

    @app.get("/loop")
    async def loop_thread() -> dict:
        return {"thread": threading.get_ident()}

    with TestClient(app) as client:
        assert client.get("/").json() == {"one": 1}
        assert client.get("/rows").text == "a\nb\n"
        loop = client.get("/loop").json()["thread"]
    assert seen == {"dependency": loop, "endpoint": loop, "iterator": loop}


@pytest.mark.anyio
async def test_a_function_runs_in_a_copy_of_the_callers_context(inline: None) -> None:
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable", default="outer")

    def change() -> str:
        variable.set("inner")
        return variable.get()

    assert await anyio.to_thread.run_sync(change) == "inner"
    assert variable.get() == "outer"  # as a thread's changes stay in the thread


@pytest.mark.anyio
async def test_options_are_accepted_and_errors_raise(inline: None) -> None:
    def fail() -> None:
        raise ValueError("raised inline")

    with pytest.raises(ValueError, match="raised inline"):
        await anyio.to_thread.run_sync(fail, abandon_on_cancel=True, limiter=None)
