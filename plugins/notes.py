"""A small JSON API with state: ``GET /`` lists notes, ``POST /`` adds one, ``GET /{id}`` reads
one, ``DELETE /{id}`` removes one.

The notes live in the plug-in's store (``ctx.store``), so every worker process, every server
sharing the store and every tab of the site sees the same notes, and they outlast a restart.
Ids come from the store's atomic increment: 1, 2, 3, ... wherever a note is added.
"""

from valor import HTTPError, Response, vlugin


def on_create(ctx):
    ctx.state.seeded = False


@vlugin
async def on_request(ctx, req):
    if not ctx.state.seeded:
        await _seed(ctx)
    parts = [part for part in req.path.split("/") if part]
    if not parts:
        if req.method == "GET":
            return {"notes": await _all_notes(ctx.store)}
        if req.method == "POST":
            data = req.json()
            text = data.get("text") if isinstance(data, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise HTTPError(400, "a note needs a non-empty string field 'text'")
            note = {"id": await ctx.store.increment("next-id"), "text": text.strip()}
            await ctx.store.set(_key(note["id"]), note)
            location = f"{req.prefix}/{note['id']}"
            return Response(note, status_code=201, headers={"location": location})
        raise HTTPError(405, f"{req.method} is not allowed on /; use GET or POST")
    if len(parts) != 1 or not parts[0].isdigit():
        raise HTTPError(404, f"no such resource {req.path!r}; notes live at /<id>")
    note_id = int(parts[0])
    note = await ctx.store.get(_key(note_id)) if note_id < 10**16 else None
    if note is None:
        raise HTTPError(404, f"no note with id {note_id}")
    if req.method == "GET":
        return note
    if req.method == "DELETE":
        await ctx.store.delete(_key(note_id))
        return None
    raise HTTPError(405, f"{req.method} is not allowed on /{note_id}; use GET or DELETE")


async def _seed(ctx):
    """Add the configured first notes once per store: whichever worker comes first does."""
    seed = ctx.config.get("seed", [])
    batch = ctx.store.atomic().check("next-id", None).set("next-id", len(seed))
    for note_id, text in enumerate(seed, start=1):
        batch.set(_key(note_id), {"id": note_id, "text": text})
    await batch.commit()  # not ok: the store was seeded before
    ctx.state.seeded = True


async def _all_notes(store):
    notes, cursor = [], None
    while True:
        page = await store.list("note/", limit=1000, cursor=cursor)
        notes += [entry.value for entry in page.entries]
        cursor = page.cursor
        if cursor is None:
            return notes


def _key(note_id):
    return f"note/{note_id:016d}"  # zero-padded: key order is id order
