"""The to-do list's API: ``GET /`` lists the to-dos, ``POST /`` adds one (``{"title"}``),
``PATCH /{id}`` marks one done or not (``{"done"}``), ``DELETE /{id}`` removes one.

The to-dos live in the plug-in's store, so they outlast a reload of the page (in the browser,
the site's IndexedDB database).
"""

from valor import HTTPError, Response, vlugin


def on_create(ctx):
    pass  # the handler takes ctx


@vlugin
async def todos(ctx, req):
    parts = [part for part in req.path.split("/") if part]
    if not parts:
        if req.method == "GET":
            listed = await ctx.store.list("todo/", limit=1000)
            items = sorted((entry.value for entry in listed.entries), key=lambda t: t["id"])
            return {"todos": items}
        if req.method == "POST":
            data = req.json()
            title = data.get("title") if isinstance(data, dict) else None
            if not isinstance(title, str) or not title.strip():
                raise HTTPError(400, "a to-do needs a non-empty string field 'title'")
            todo = {"id": await ctx.store.increment("next-id"), "title": title.strip()}
            todo["done"] = False
            await ctx.store.set(f"todo/{todo['id']:08d}", todo)
            return Response(todo, status_code=201)
        raise HTTPError(405, f"{req.method} is not allowed on /; use GET or POST")
    if len(parts) != 1 or not parts[0].isdigit() or len(parts[0]) > 8:
        raise HTTPError(404, f"no such resource {req.path!r}; to-dos live at /<id>")
    key = f"todo/{int(parts[0]):08d}"
    todo = await ctx.store.get(key)
    if todo is None:
        raise HTTPError(404, f"no to-do with id {int(parts[0])}")
    if req.method == "PATCH":
        data = req.json()
        if not isinstance(data, dict) or not isinstance(data.get("done"), bool):
            raise HTTPError(400, 'send {"done": true} or {"done": false}')
        todo["done"] = data["done"]
        await ctx.store.set(key, todo)
        return todo
    if req.method == "DELETE":
        await ctx.store.delete(key)
        return None
    raise HTTPError(405, f"{req.method} is not allowed on /{parts[0]}; use PATCH or DELETE")
