"""The smallest plug-in: answers every request with a greeting."""

from valor import vlugin


@vlugin
async def on_request(req):
    return "Hello Plugin!"
