"""Calls out with ``ctx.http``, for the tests of ``valor.client``: each path one way out, and
the answer is what the plug-in saw (status, reason, headers, body) or the error it caught."""

from urllib.parse import urlsplit

import httpx

from valor import HTTPError, Response, StreamingResponse, vlugin


async def on_create(ctx):
    ctx.state.upstream = ctx.config["upstream"]
    ctx.state.closed = ctx.config["closed"]  # a URL nothing listens on
    ctx.state.at_load = None
    if ctx.state.upstream != ctx.state.closed:  # a call out while the plug-in loads
        ctx.state.at_load = (await ctx.http.get(ctx.state.upstream + "news.json")).json()


def seen(response):
    """What the plug-in saw of an answer, in full."""
    return {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "headers": [list(pair) for pair in response.headers.multi_items()],
        "body": response.content.decode("latin-1"),
    }


def caught(exc):
    return Response(
        {
            "error": type(exc).__name__,
            "connect_error": isinstance(exc, httpx.ConnectError),
            "timeout": isinstance(exc, httpx.TimeoutException),
            "read_error": isinstance(exc, httpx.ReadError),
            "request_error": isinstance(exc, httpx.RequestError),
            "message": str(exc),
        },
        status_code=502,
    )


@vlugin
async def on_request(ctx, req):
    http, upstream = ctx.http, ctx.state.upstream
    try:
        if req.path == "/at-load":
            return {"at_load": ctx.state.at_load}
        if req.path == "/answer":
            return seen(await http.get(upstream + "answer"))
        if req.path == "/post":
            sent = await http.post(upstream + "echo", content=req.body, headers={"x-test": "t"})
            return seen(sent)
        if req.path == "/cookie-kept":  # one request's cookie must not go with the next
            await http.get(upstream + "set-cookie")
            return seen(await http.post(upstream + "echo"))
        if req.path == "/sibling":
            return seen(await http.get("/echo/below?q=1", headers={"x-test": "sibling"}))
        if req.path == "/sibling-slow":  # a sibling slower than the call's own timeout
            return seen(await http.get("/caller/hang", timeout=float(req.query_params["t"])))
        if req.path == "/sibling-stream":  # a sibling's streamed answer, part by part
            parts = []
            params = dict(req.query_params)
            async with http.stream("GET", "/ticker", params=params) as answer:
                async for part in answer.aiter_raw():
                    parts.append(part.decode())
            return {"parts": parts}
        if req.path == "/own-origin":  # the runtime's own origin, as a page would call it
            origin = "{0.scheme}://{0.netloc}".format(urlsplit(req.url))
            return seen(await http.post(origin + "/echo/own", content=b"body"))
        if req.path == "/loop":
            answer = await http.get("/caller/loop")
            return Response(answer.content, status_code=answer.status_code,
                            headers={"content-type": answer.headers["content-type"]})  # fmt: skip
        if req.path == "/slow":
            return seen(await http.get(upstream + "slow", timeout=float(req.query_params["t"])))
        if req.path == "/hang":  # longer than the plug-in's own timeout
            return seen(await http.get(upstream + "slow", timeout=60))
        if req.path == "/refused":
            return seen(await http.get(upstream.replace("127.0.0.1", "localhost") + "answer"))
        if req.path == "/unreachable":
            return seen(await http.get(ctx.state.closed))
        if req.path in ("/big", "/big-chunked"):
            size = req.query_params["size"]
            return seen(await http.get(upstream + req.path[1:] + "?size=" + size))
        if req.path == "/no-cors":
            return seen(await http.get(upstream + "no-cors"))
        if req.path == "/cookie":  # a header a browser's fetch may not send
            return seen(await http.post(upstream + "echo", headers={"cookie": "a=1"}))
        if req.path == "/stream":
            return StreamingResponse(relay(http, upstream + "stream"), media_type="text/plain")
    except httpx.HTTPError as exc:
        return caught(exc)
    raise HTTPError(404, f"no test at {req.path}")


async def relay(http, url):
    """The upstream's answer, part by part as it comes."""
    async with http.stream("GET", url) as response:
        async for part in response.aiter_bytes():
            yield part
