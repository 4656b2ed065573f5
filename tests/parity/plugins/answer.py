"""Answers exactly what the request body describes, as JSON:
``{"status": 200, "headers": [[name, value], ...], "body": "Latin-1 text"}``."""

import json


def onmessage(event):
    wanted = json.loads(event.data["body"])
    body = wanted.get("body")
    postMessage(  # noqa: F821
        {
            "status": wanted.get("status", 200),
            "headers": wanted.get("headers", []),
            "body": None if body is None else body.encode("latin-1"),
        }
    )
