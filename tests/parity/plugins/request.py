"""Answers what a decorated handler sees of its request, as JSON."""

from valor import vlugin


@vlugin
def on_request(req):
    return {
        "method": req.method,
        "path": req.path,
        "url": req.url,
        "query": list(req.query_params.items()),
        "headers": req.headers.raw(),
        "body": req.body.decode("latin-1"),
    }
