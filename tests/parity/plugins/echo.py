"""Answers the wire message it received, as JSON (the body as Latin-1 text, or null). Of the
headers only ``x-`` ones: each client (httpx, Chromium) adds its own others."""

import json


def onmessage(event):
    message = dict(event.data)
    body = message["body"]
    message["body"] = None if body is None else body.decode("latin-1")
    message["headers"] = [pair for pair in message["headers"] if pair[0].startswith("x-")]
    postMessage({"status": 200, "body": json.dumps(message)})  # noqa: F821
