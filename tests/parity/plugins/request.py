"""Answers what a decorated handler sees of its request, as JSON (of the headers only ``x-``
ones: each client, httpx or Chromium, adds its own others)."""

from valor import vlugin


@vlugin
def on_request(req):
    return {
        "method": req.method,
        "path": req.path,
        "url": req.url,
        "query": list(req.query_params.items()),
        "headers": [pair for pair in req.headers.raw() if pair[0].startswith("x-")],
        "body": req.body.decode("latin-1"),
    }
