"""Every store operation over HTTP, for the plug-in-level store table
(``tests/parity/store_table.py``): ``POST /kv`` with ``{"op": ..., ...}`` answers JSON.

Values are JSON, or bytes given and answered as ``{"bytes": base64}``. A store error (a bad key,
a value too large, ...) answers 400 naming its kind and the key.
"""

import base64

from valor import HTTPError, vlugin
from valor.store import StoreError, StoreUnavailable


def on_create(ctx):
    """Only so the handler is given ``ctx``."""


@vlugin
async def on_request(ctx, req):
    if req.method != "POST":
        raise HTTPError(405, "POST a JSON operation")
    request = req.json()
    try:
        return await _run(ctx.store, request)
    except StoreUnavailable:
        raise
    except StoreError as exc:
        raise HTTPError(400, f"{type(exc).__name__}: {exc}") from None


async def _run(store, request):
    op = request["op"]
    if op == "get":
        entry = await store.get_entry(request["key"])
        return {"entry": None if entry is None else _entry(entry)}
    if op == "set":
        expire_in = request.get("expire_in")
        return {"version": await store.set(request["key"], _value(request), expire_in=expire_in)}
    if op == "delete":
        await store.delete(request["key"])
        return {"deleted": request["key"]}
    if op == "increment":
        return {"total": await store.increment(request["key"], request.get("by", 1))}
    if op == "list":
        page = await store.list(
            request.get("prefix", ""), limit=request.get("limit", 100), cursor=request.get("cursor")
        )
        return {"entries": [_entry(e) for e in page.entries], "cursor": page.cursor}
    if op == "atomic":
        batch = store.atomic()
        for key, version in request.get("checks", []):
            batch.check(key, version)
        for kind, key, *rest in request.get("mutations", []):
            if kind == "set":
                batch.set(key, rest[0])
            elif kind == "delete":
                batch.delete(key)
            else:
                batch.increment(key, *rest)
        done = await batch.commit()
        return {"ok": done.ok, "version": done.version}
    raise HTTPError(400, f"unknown op {op!r}")


def _value(request):
    if "bytes" in request:
        return base64.b64decode(request["bytes"])
    return request["value"]


def _entry(entry):
    value = entry.value
    if isinstance(value, bytes):
        value = {"bytes": base64.b64encode(value).decode()}
    return {"key": entry.key, "value": value, "version": entry.version}
