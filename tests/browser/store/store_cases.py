"""A test plug-in: the store's table of cases (``tests/test_store.py``, shipped beside it as
``store_table.py``) run against IndexedDB in the runtime worker of the tab that asks.

``GET /store-cases/<name>`` runs ``case_<name>`` on a new database of its own, a second
connection to it standing in for another tab's, and answers ``{"ok", "error"}``.
``GET /store-cases/`` names the backend of this plug-in's own ``ctx.store``.
"""

import asyncio
import traceback
import uuid

import store_table
from js import indexedDB
from pyodide.ffi import create_once_callable

from valor import HTTPError, vlugin
from valor.store.indexeddb import IndexedDBBackend


def on_create(ctx):
    """Only so the handler is given ``ctx`` (its own store)."""


@vlugin
async def on_request(ctx, req):
    name = req.path.strip("/")
    if not name:
        backend = ctx.store.backend
        return {"backend": type(backend).__name__, "description": backend.description}
    case = getattr(store_table, f"case_{name}", None)
    if case is None:
        raise HTTPError(404, f"no store case {name!r}")
    database = f"valor-store-case:{name}:{uuid.uuid4()}"
    backends = [IndexedDBBackend(database)]

    async def another():
        backends.append(IndexedDBBackend(database))
        return backends[-1]

    try:
        await case(store_table.Opened(backends[0], another, store_table.Clock()))
        return {"ok": True, "error": None}
    except BaseException:
        return {"ok": False, "error": traceback.format_exc()}
    finally:
        for backend in backends:
            await backend.close()
        await _delete(database)


async def _delete(database):
    deleted = asyncio.get_running_loop().create_future()
    request = indexedDB.deleteDatabase(database)
    request.onsuccess = create_once_callable(lambda event: deleted.set_result(None))
    await deleted
