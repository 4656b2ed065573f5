"""The benchmark's plug-in (benchmarks/store_browser.py): in the runtime worker, one round of
an operation through the Valor store (``ctx.store``, IndexedDB) or through IndexedDB driven
from plain JavaScript, each call timed where it runs. ``GET /store-bench/<side>/<op>?n=50``
answers the round's durations in microseconds. ``python``: the plain JavaScript calls, each
awaited from Python, which is what any Python code in Pyodide pays to wait for IndexedDB.
``floor`` (get only): the plain JavaScript get answering Python through one call in and one
call back, its transaction committed after its one request and the waiting task resumed in the
event as the store's are: no Python work besides, the least a read from Python can cost here.
(``raw`` is IndexedDB as JavaScript programs commonly use it: no explicit commit;
``committed``, get only: the same get committing its transaction after its one request, as
the store's get does, printed beside it so the store's gain from that is not mistaken for
less overhead.)"""

import asyncio
import time

from pyodide.code import run_js
from pyodide.ffi import create_proxy

from valor import HTTPError, vlugin
from valor.store.indexeddb import _answer

VALUE = {"text": "a note of some forty characters or so", "id": 12345}

# IndexedDB as a JavaScript program would use it for the same three operations: a get in a
# read-only transaction; a put, answered once the transaction has committed; an increment as
# a get and a put in one read-write transaction. Each call timed in JavaScript.
RAW = run_js(
    """(() => {
  let db = null;
  const open = () => new Promise((resolve, reject) => {
    const request = indexedDB.open("raw-bench", 1);
    request.onupgradeneeded = () => request.result.createObjectStore("kv");
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
  const value = {text: "a note of some forty characters or so", id: 12345};
  const calls = {
    get: (i) => new Promise((resolve, reject) => {
      const request = db.transaction("kv", "readonly").objectStore("kv").get("k0");
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    }),
    getCommitted: (i) => new Promise((resolve, reject) => {
      const transaction = db.transaction("kv", "readonly");
      const request = transaction.objectStore("kv").get("k0");
      transaction.commit();
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    }),
    set: (i) => new Promise((resolve, reject) => {
      const transaction = db.transaction("kv", "readwrite");
      transaction.objectStore("kv").put(value, `k${i % 100}`);
      transaction.oncomplete = resolve;
      transaction.onabort = () => reject(transaction.error);
    }),
    increment: (i) => new Promise((resolve, reject) => {
      const transaction = db.transaction("kv", "readwrite");
      const kv = transaction.objectStore("kv");
      const request = kv.get("n");
      request.onsuccess = () => kv.put((request.result ?? 0) + 1, "n");
      transaction.oncomplete = resolve;
      transaction.onabort = () => reject(transaction.error);
    }),
  };
  const round = async (op, start, count) => {
    db ??= await open();
    if (op.startsWith("get")) await calls.set(0);  // a get reads a stored value, as Valor's does
    const durations = [];
    for (let i = start; i < start + count; i++) {
      const started = performance.now();
      await calls[op](i);
      durations.push((performance.now() - started) * 1000);
    }
    return durations;
  };
  round.one = async (op, i) => { db ??= await open(); return calls[op](i); };
  round.floor = (done, id) => {  // committed after its one request, as the store's get
    const transaction = db.transaction("kv", "readonly");
    const request = transaction.objectStore("kv").get("k0");
    transaction.commit();
    request.onsuccess = () => done(id);
  };
  return round;
})()"""
)


# The floor's reads under way, and the one proxy that answers them (made once, as the store's).
floor_reads = {}
floor_done = create_proxy(lambda id: _answer(floor_reads.pop(id), None))


def floor_get(index):
    read = floor_reads[index] = asyncio.Future()
    RAW.floor(floor_done, index)
    return read


def on_create(ctx):
    """Only so the handler is given ``ctx``."""


@vlugin
async def on_request(ctx, req):
    side, _, op = req.path.strip("/").partition("/")
    start = int(req.query_params.get("start", "0"))
    count = int(req.query_params.get("n", "50"))
    sides = ("valor", "raw", "committed", "python", "floor")
    if op not in ("get", "set", "increment") or side not in sides:
        raise HTTPError(404, f"GET /store-bench/<{'|'.join(sides)}>/<get|set|increment>")
    if side == "committed" and op != "get":
        raise HTTPError(404, "plain JavaScript committing early is measured for get only")
    if side in ("raw", "committed"):
        durations = await RAW(op if side == "raw" else "getCommitted", start, count)
        return {"us": durations.to_py()}
    store = ctx.store
    if side == "floor":
        if op != "get":
            raise HTTPError(404, "the floor is measured for get only")
        await RAW.one("set", 0)
        call = floor_get
    elif side == "python":  # the same JavaScript calls, each awaited from Python
        if op == "get":
            await RAW.one("set", 0)

        def call(index):
            return RAW.one(op, index)

    elif op == "get":
        await store.set("k0", VALUE)

        def call(index):
            return store.get("k0")
    elif op == "set":

        def call(index):
            return store.set(f"k{index % 100}", VALUE)
    else:

        def call(index):
            return store.increment("n")

    clock = time.perf_counter
    durations = []
    for index in range(start, start + count):
        started = clock()
        await call(index)
        durations.append((clock() - started) * 1e6)
    return {"us": durations}
