"""A bare ASGI app that calls a sibling through ``valor.http_client()``."""

import valor


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    answer = await valor.http_client().get("/echo/from-asgi")
    start = {"type": "http.response.start", "status": 200}
    await send({**start, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": answer.content})
