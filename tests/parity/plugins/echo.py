"""Answers the wire message it received, as JSON (the body as Latin-1 text, or null)."""

import json


def onmessage(event):
    message = dict(event.data)
    body = message["body"]
    message["body"] = None if body is None else body.decode("latin-1")
    postMessage({"status": 200, "body": json.dumps(message)})  # noqa: F821
