"""Answers with what it got: the method, URL, body and Valor's headers, as JSON."""

import json

SHOWN = ("content-type", "x-forwarded-prefix", "x-request-id", "x-test")


def onmessage(event):
    request = event.data
    seen = {
        "method": request["method"],
        "url": request["url"],
        "headers": [pair for pair in request["headers"] if pair[0] in SHOWN],
        "body": (request["body"] or b"").decode("latin-1"),
    }
    headers = [["content-type", "application/json"]]
    postMessage({"status": 200, "headers": headers, "body": json.dumps(seen)})  # noqa: F821
