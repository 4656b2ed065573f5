"""A worker-style plug-in that counts its messages in its store (the global ``store``, which the
runtime provides as it provides ``postMessage``); it shares the namespace ``common``."""

import json


async def onmessage(event):
    count = await store.increment("messages")  # noqa: F821 - provided by the runtime
    entry = await store.get_entry("a")  # noqa: F821 - kv-shared's "a"
    answer = {"messages": count, "a": None if entry is None else [entry.value, entry.version]}
    postMessage(  # noqa: F821
        {
            "status": 200,
            "headers": [["content-type", "application/json"]],
            "body": json.dumps(answer).encode(),
        }
    )
