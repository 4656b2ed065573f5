"""A plug-in that fails on purpose, to show how Valor answers failures.

``/raise`` raises (a 500 with an error id), ``/hang`` never answers (a 504 after the manifest's
``timeout``), anything else answers "still serving".
"""

import asyncio

from valor import vlugin


@vlugin
async def on_request(req):
    if req.path == "/raise":
        raise RuntimeError("faulty plug-in raised on purpose")
    if req.path == "/hang":
        await asyncio.Event().wait()
    return "still serving"
