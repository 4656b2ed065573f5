"""An existing Starlette app as a plug-in (type "asgi"), in both hosts.

``GET /`` greets, ``GET /posts/{number}`` reads a post (seeded by the lifespan), ``POST
/echo`` answers its JSON body with a ``Location`` built by ``url_for``, ``GET /where`` shows
the URL the app sees (its ``root_path`` is the plug-in's prefix). ``GET /count?to=3`` streams
lines with Starlette's ``StreamingResponse``; ``&hold=1`` holds the last one back until ``POST
/release``.
"""

import asyncio
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
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


HELD: list[asyncio.Event] = []


async def count(request: Request) -> StreamingResponse:
    to = int(request.query_params.get("to", "3"))
    held = asyncio.Event() if request.query_params.get("hold") == "1" else None
    if held is not None:
        HELD.append(held)

    async def lines():
        for number in range(1, to + 1):
            if held is not None and number == to:
                await held.wait()
            yield f"{number}\n"

    return StreamingResponse(lines(), media_type="text/plain")


async def release(request: Request) -> JSONResponse:
    for held in HELD:
        held.set()
    return JSONResponse({"released": len(HELD)})


@asynccontextmanager
async def lifespan(app: Starlette):
    yield {"posts": ["Welcome to the board"]}


app = Starlette(
    routes=[
        Route("/", hello),
        Route("/posts/{number:int}", read_post, name="read_post"),
        Route("/echo", echo, methods=["POST"]),
        Route("/where", where),
        Route("/count", count),
        Route("/release", release, methods=["POST"]),
    ],
    lifespan=lifespan,
)
