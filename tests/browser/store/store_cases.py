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
from pyodide.ffi import JsException, create_once_callable, to_js

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
    case = BROWSER_CASES.get(name) or getattr(store_table, f"case_{name}", None)
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


async def case_expired_entries_are_removed(opened):
    """Expired entries are not only invisible: a later write removes them from the database."""
    store = opened.store("sweep")
    for index in range(5):
        await store.set(f"brief/{index}", index, expire_in=1)
    await store.set("kept", "yes")
    opened.clock.advance(2)
    fresh = await opened.another()  # sweeps at its first write, as a new tab's runtime does
    await opened.store("other", fresh).set("written", 1)
    left = await _count(fresh, "entries")
    assert left == 2, f"{left} entries left: the 5 expired ones should be gone"
    assert [e.key for e in (await store.list()).entries] == ["kept"]


async def case_writes_from_two_connections_get_distinct_versions(opened):
    """Plain writes take the next version at once when the connection knows the counter: one
    that another connection moved meanwhile is undone and made again."""
    first = opened.store("race")
    second = opened.store("race", await opened.another())
    versions = []
    for index in range(20):  # taking turns: each finds the counter moved by the other
        store = (first, second)[index % 2]
        versions.append(await store.set(f"turn/{index}", index))
    assert versions == sorted(versions) and len(set(versions)) == 20, versions
    together = await asyncio.gather(
        *(first.set(f"a/{i}", i) for i in range(30)), *(second.set(f"b/{i}", i) for i in range(30))
    )
    assert len(set(together)) == 60 and min(together) > versions[-1]
    for index in range(30):
        for store, key, version in ((first, f"a/{index}", together[index]),
                                    (second, f"b/{index}", together[30 + index])):  # fmt: skip
            entry = await store.get_entry(key)
            assert entry is not None and entry.version == version, (key, entry, version)
    deleted = await first.atomic().delete("turn/0").set("turn/1", "again").commit()
    assert deleted.ok and deleted.version > max(together)
    assert (await second.get_entry("turn/1")).version == deleted.version


async def case_a_transaction_does_not_outlive_an_await(opened):
    """Why a commit issues its requests from IndexedDB's own event handlers: once Python
    awaits (here one event-loop turn), its transaction has committed and takes no request."""
    db = await opened.backend._database()
    transaction = db.transaction("entries", "readwrite")
    transaction.objectStore("entries").get(to_js(["ns", b"k"]))  # active now
    await asyncio.sleep(0)
    try:
        transaction.objectStore("entries").get(to_js(["ns", b"k"]))
    except JsException as exc:  # inactive, or even finished already
        assert "TransactionInactiveError" in str(exc) or "finished" in str(exc), exc
    else:
        raise AssertionError("the transaction was still active after an await")


BROWSER_CASES = {
    "a_transaction_does_not_outlive_an_await": case_a_transaction_does_not_outlive_an_await,
    "expired_entries_are_removed": case_expired_entries_are_removed,
    "writes_from_two_connections_get_distinct_versions": (
        case_writes_from_two_connections_get_distinct_versions
    ),
}
"""Cases of the browser's backend alone."""


async def _count(backend, store_name):
    db = await backend._database()
    counted = asyncio.get_running_loop().create_future()
    request = db.transaction(store_name, "readonly").objectStore(store_name).count()
    request.onsuccess = create_once_callable(lambda event: counted.set_result(request.result))
    return await counted


async def _delete(database):
    deleted = asyncio.get_running_loop().create_future()
    request = indexedDB.deleteDatabase(database)
    request.onsuccess = create_once_callable(lambda event: deleted.set_result(None))
    await deleted
