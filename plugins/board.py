"""An existing Starlette app as a plug-in (type "asgi"), in both hosts.

``GET /`` greets, ``GET /posts/{number}`` reads a post (seeded by the lifespan), ``POST
/echo`` answers its JSON body with a ``Location`` built by ``url_for``, ``GET /where`` shows
the URL the app sees (its ``root_path`` is the plug-in's prefix).
"""

from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello from Starlette!")


async def read_post(request: Request) -> JSONResponse:
    number = request.path_params["number"]
    posts = request.state.posts
    if not 0 < number <= len(posts):
        return JSONResponse({"error": f"no post {number}"}, status_code=404)
    return JSONResponse({"number": number, "text": posts[number - 1]})


async def echo(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse(
        {"echo": data}, headers={"location": str(request.url_for("read_post", number=1))}
    )


async def where(request: Request) -> JSONResponse:
    return JSONResponse(
        {"url": str(request.url), "root_path": request.scope["root_path"],
         "path_params": request.path_params, "query": dict(request.query_params)}
    )  # fmt: skip


@asynccontextmanager
async def lifespan(app: Starlette):
    yield {"posts": ["Welcome to the board"]}


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/posts/{number:int}", read_post, name="read_post"),
        Route("/echo", echo, methods=["POST"]),
        Route("/where", where),
    ],
    lifespan=lifespan,
)
