"""Streams three parts, the last one failing when asked to (``?fail=1``)."""

from valor import StreamingResponse, vlugin


@vlugin
async def on_request(req):
    fail = req.query_params.get("fail") == "1"

    async def parts():
        yield "tick 1\n"
        yield "tick 2\n"
        if fail:
            raise RuntimeError("the ticker broke")
        yield "tick 3\n"

    return StreamingResponse(parts(), media_type="text/plain")
