"""A small JSON API with state: ``GET /`` lists notes, ``POST /`` adds one, ``GET /{id}`` reads
one, ``DELETE /{id}`` removes one.

The notes live in the process that serves them (``valor serve --workers 2`` runs two lists).
Added notes get random ids, so two processes never hand out the same id for different notes.
"""

import secrets

from valor import HTTPError, Response, vlugin


def on_create(ctx):
    ctx.state.notes = {}
    for note_id, text in enumerate(ctx.config.get("seed", []), start=1):
        _add(ctx, text, note_id)


@vlugin
async def on_request(ctx, req):
    parts = [part for part in req.path.split("/") if part]
    if not parts:
        if req.method == "GET":
            return {"notes": list(ctx.state.notes.values())}
        if req.method == "POST":
            data = req.json()
            text = data.get("text") if isinstance(data, dict) else None
            if not isinstance(text, str) or not text.strip():
                raise HTTPError(400, "a note needs a non-empty string field 'text'")
            note = _add(ctx, text.strip(), _new_id(ctx))
            location = f"{req.prefix}/{note['id']}"
            return Response(note, status_code=201, headers={"location": location})
        raise HTTPError(405, f"{req.method} is not allowed on /; use GET or POST")
    if len(parts) != 1 or not parts[0].isdigit():
        raise HTTPError(404, f"no such resource {req.path!r}; notes live at /<id>")
    note_id = int(parts[0])
    if note_id not in ctx.state.notes:
        raise HTTPError(404, f"no note with id {note_id}")
    if req.method == "GET":
        return ctx.state.notes[note_id]
    if req.method == "DELETE":
        del ctx.state.notes[note_id]
        return None
    raise HTTPError(405, f"{req.method} is not allowed on /{note_id}; use GET or DELETE")


def _add(ctx, text, note_id):
    note = {"id": note_id, "text": text}
    ctx.state.notes[note_id] = note
    return note


def _new_id(ctx):
    while True:  # 12 digits: still a JSON number any client reads exactly
        note_id = 10**11 + secrets.randbelow(9 * 10**11)
        if note_id not in ctx.state.notes:
            return note_id
