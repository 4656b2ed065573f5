"""The baseline for ``benchmarks/server.py``: a bare Starlette app answering like ``hello``."""

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def hello(request):
    return PlainTextResponse("Hello Plugin!")


app = Starlette(routes=[Route("/hello", hello, methods=["GET", "POST"])])
