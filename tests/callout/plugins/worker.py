"""A worker-style plug-in that calls a sibling through ``valor.http_client()``."""

import valor


async def onmessage(event):
    answer = await valor.http_client().get("/echo/from-worker")
    headers = [["content-type", "application/json"]]
    postMessage({"status": 200, "headers": headers, "body": answer.content})  # noqa: F821
