"""The app: ``uvicorn readinglist.main:app`` runs it on its own, ``valor serve
plugins/asgi.json`` and the browser bundle mount it at ``/readinglist``."""

from typing import Annotated

from fastapi import BackgroundTasks, FastAPI, Header, Request

from .routers import books

app = FastAPI(title="readinglist")
app.include_router(books.router)


@app.get("/")
def hello(request: Request) -> dict:
    # request.client is the peer on the server, a loopback stand-in in the browser.
    return {"hello": "readers", "root_path": request.scope["root_path"],
            "client": request.client.host}  # fmt: skip


@app.get("/headers")
def headers(request: Request, x_token: Annotated[list[str] | None, Header()] = None) -> dict:
    # The client's headers only: Valor's request id is in the scope's "valor" extension.
    return {
        "x_token": x_token,
        "x-request-id": request.headers.get("x-request-id"),
        "x-forwarded-prefix": request.headers.get("x-forwarded-prefix"),
        "valor": request.scope["extensions"]["valor"],
    }


def fail() -> None:
    raise RuntimeError("the background task failed")


@app.get("/after")
def after(tasks: BackgroundTasks) -> dict:
    tasks.add_task(fail)  # runs after the answer is sent: only the log can tell
    return {"answered": True}
