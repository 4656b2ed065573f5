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
from pyodide.code import run_js
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
    transaction.objectStore("entries").put(entry, to_js(b"earlier\xffn"))
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


# A database as version 1 of the backend left it: entries keyed [namespace, key in UTF-8].
VERSION_1 = run_js(
    """(name, entries) => new Promise((resolve, reject) => {
  const request = indexedDB.open(name, 1);
  request.onupgradeneeded = () => {
    request.result.createObjectStore("entries").createIndex("expiry", "e");
    request.result.createObjectStore("meta");
  };
  request.onerror = () => reject(request.error);
  request.onsuccess = () => {
    const db = request.result;
    const transaction = db.transaction("entries", "readwrite");
    const encoder = new TextEncoder();
    for (const [namespace, key, json, tick, connection, expires] of entries) {
      const value = {k: key, v: encoder.encode("j" + json), n: tick, c: connection, e: expires};
      transaction.objectStore("entries").put(value, [namespace, encoder.encode(key)]);
    }
    transaction.oncomplete = () => { db.close(); resolve(); };
    transaction.onabort = () => reject(transaction.error);
  };
})"""
)


async def case_entries_of_version_1_are_moved_to_their_keys(opened):
    """A database version 1 wrote (keys ``[namespace, key]``) is upgraded on opening: every
    entry is read, listed in code-point order and written under its key, as before."""
    undefined = None
    entries = [
        ["old", "a", "1", 5, 3, undefined],
        ["old", "\U0001f600", '"smile"', 6, 3, undefined],
        ["old", "\uffff", '"last BMP"', 7, 3, undefined],
        ["old", "gone", "0", 8, 3, 1.0],  # expired long ago
        ["oldish", "b", "2", 9, undefined, undefined],  # from before clock versions
    ]
    await VERSION_1(opened.backend.name, to_js(entries))
    store, other = opened.store("old"), opened.store("oldish")
    assert await store.get("a") == 1 and await store.get("gone") is None
    assert (await store.get_entry("a")).version == f"{5 * 10_000 + 3:020d}"
    assert (await other.get_entry("b")).version == f"{9:020d}"
    listed = [(e.key, e.value) for e in (await store.list()).entries]
    assert listed == [("a", 1), ("\uffff", "last BMP"), ("\U0001f600", "smile")], listed
    assert [e.key for e in (await store.list("\uffff")).entries] == ["\uffff"]
    assert [e.key for e in (await other.list()).entries] == ["b"]
    assert await _count(opened.backend, "entries") == 5  # moved, not copied
    assert await store.increment("a") == 2 and await other.increment("b") == 3


async def case_a_batch_reads_more_than_its_buffer_holds(opened):
    """A batch's reads cross to Python one after another in the backend's buffer (64 KiB), and
    one that no longer fits comes as it is: the entries read after it are still read right."""
    store = opened.store("big")
    first = await store.set("first", "a" * 40_000)
    second = await store.set("second", "b" * 40_000)
    await store.set("n", 1)
    batch = store.atomic().check("first", first).check("second", second).increment("n", 2)
    done = await batch.set("third", "c" * 40_000).commit()
    assert done.ok, done
    assert await store.get("n") == 3 and await store.get("third") == "c" * 40_000
    assert [await store.get(key) for key in ("first", "second")] == ["a" * 40_000, "b" * 40_000]
    assert not (await store.atomic().check("second", first).increment("n").commit()).ok
    assert await store.get("n") == 3


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
    "a_batch_reads_more_than_its_buffer_holds": case_a_batch_reads_more_than_its_buffer_holds,
    "a_transaction_does_not_outlive_an_await": case_a_transaction_does_not_outlive_an_await,
    "entries_of_version_1_are_moved_to_their_keys": (
        case_entries_of_version_1_are_moved_to_their_keys
    ),
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
