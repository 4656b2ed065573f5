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
from js import Object, indexedDB
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
    """Versions come from each connection's clock and end with its number: two connections
    never hand out the same one, even writing at once; each one's versions grow; and a write
    made after reading an entry gets a greater version than the entry's."""
    first = opened.store("race")
    second = opened.store("race", await opened.another())
    versions = []
    for index in range(20):  # taking turns on one key, each reading the other's write first
        store = (first, second)[index % 2]
        if versions:
            assert (await store.get_entry("turn")).version == versions[-1]
        versions.append(await store.set("turn", index))
    assert versions == sorted(versions) and len(set(versions)) == 20, versions
    ends = {version[-4:] for version in versions}  # the connections' numbers
    assert len(ends) == 2, versions
    together = await asyncio.gather(
        *(first.set(f"a/{i}", i) for i in range(30)), *(second.set(f"b/{i}", i) for i in range(30))
    )
    assert len(set(together)) == 60, together
    for own in (together[:30], together[30:]):
        assert own == sorted(own) and len({version[-4:] for version in own}) == 1, own
    for index in range(30):
        for store, key, version in ((first, f"a/{index}", together[index]),
                                    (second, f"b/{index}", together[30 + index])):  # fmt: skip
            entry = await store.get_entry(key)
            assert entry is not None and entry.version == version, (key, entry, version)
    # A batch that checks a key gives it a greater version than the one checked, whichever
    # connection wrote that; a stale check fails.
    stale = (await first.get_entry("b/0")).version
    for store in (second, first, second):
        entry = await store.get_entry("b/0")
        done = await store.atomic().check("b/0", entry.version).set("b/0", "again").commit()
        assert done.ok and done.version > entry.version, (entry, done)
    assert not (await second.atomic().check("b/0", stale).delete("b/0").commit()).ok


async def case_entries_written_before_clock_versions_are_read_and_outgrown(opened):
    """An entry as an earlier release wrote it (``n`` its version from the store's counter,
    no ``c``) is read with that version, listed, and outgrown by the next write of it."""
    store = opened.store("earlier")
    await store.set("other", 1)  # the database is open
    db = await opened.backend._database()
    written = asyncio.get_running_loop().create_future()
    transaction = db.transaction("entries", "readwrite")
    entry = to_js({"k": "n", "v": b"j41", "n": 7, "e": None}, dict_converter=Object.fromEntries)
    transaction.objectStore("entries").put(entry, to_js(["earlier", b"n"]))
    transaction.oncomplete = create_once_callable(lambda event: written.set_result(None))
    await written
    old = await store.get_entry("n")
    assert old is not None and (old.value, old.version) == (41, f"{7:020d}"), old
    listed = {e.key: e.version for e in (await store.list()).entries}
    assert listed["n"] == old.version and listed["other"] > old.version, listed
    assert not (await store.atomic().check("n", f"{8:020d}").set("n", 0).commit()).ok
    assert await store.increment("n") == 42
    assert (await store.get_entry("n")).version > old.version
    assert not (await store.atomic().check("n", old.version).set("n", 0).commit()).ok


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
    "entries_written_before_clock_versions_are_read_and_outgrown": (
        case_entries_written_before_clock_versions_are_read_and_outgrown
    ),
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
