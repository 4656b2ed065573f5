"""A stand-in for ``todos`` that is down: tests mount it over the real one (``POST /_plugins``)
to see how the page shows a failing API."""

from valor import HTTPError, vlugin


@vlugin
def down(req):
    raise HTTPError(503, "the to-do service is down for maintenance")
