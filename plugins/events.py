"""Server-sent events (``text/event-stream``): each event is sent the moment it is produced.

``GET /?count=5&every=0.2`` streams ``count`` events (``count=0``: until the client goes away),
``every`` seconds apart. ``&hold=1`` holds the last event back until ``POST /release``;
``&fail=2`` raises after two events (the stream ends with an error). ``GET /stats`` counts the
streams that are open and those whose generator was closed: a client that goes away closes it.
"""

import asyncio
import json

from valor import HTTPError, StreamingResponse, vlugin

STATS = {"open": 0, "closed": 0}
RELEASE: list[asyncio.Event] = []


async def events(count: int, every: float, hold: bool, fail: int):
    STATS["open"] += 1
    try:
        number = 0
        while count == 0 or number < count:
            number += 1
            if number == fail + 1:
                raise RuntimeError(f"failed after {fail} events, as asked")
            if hold and number == count:
                await RELEASE[-1].wait()
            elif number > 1:
                await asyncio.sleep(every)
            yield f"id: {number}\nevent: tick\ndata: {json.dumps({'number': number})}\n\n"
    finally:
        STATS["open"] -= 1
        STATS["closed"] += 1


@vlugin
async def on_request(req):
    if req.path == "/stats":
        return STATS
    if req.path == "/release" and req.method == "POST":
        for event in RELEASE:
            event.set()
        return {"released": len(RELEASE)}
    if req.path != "/":
        raise HTTPError(404, f"no route {req.path}")
    query = req.query_params
    hold = query.get("hold") == "1"
    if hold:
        RELEASE.append(asyncio.Event())
    parts = events(
        int(query.get("count", "5")), float(query.get("every", "0.2")), hold,
        int(query.get("fail", "-1")),
    )  # fmt: skip
    return StreamingResponse(
        parts, media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )
