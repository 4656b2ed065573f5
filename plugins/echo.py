"""A worker-style plug-in, like a Web Worker: receive a message, post an answer.

It echoes the request body back with the same content type, and names the method and URL.
"""


def onmessage(event):
    request = event.data
    content_type = next(
        (value for name, value in request["headers"] if name.lower() == "content-type"),
        "application/octet-stream",
    )
    postMessage(  # noqa: F821 - provided by the runtime, as in a Web Worker
        {
            "status": 200,
            "headers": [
                ["content-type", content_type],
                ["x-echo-method", request["method"]],
                ["x-echo-url", request["url"]],
            ],
            "body": request["body"],
        }
    )
