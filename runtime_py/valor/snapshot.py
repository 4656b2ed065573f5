"""What goes into the browser's memory snapshot, and what is renewed after booting from it.

``valor build`` makes the snapshot in Node (``snapshot.mjs``): Pyodide started, the runtime
wheel unpacked, then ``prepare`` imports every module the runtime and the plug-in kinds need,
so a browser boot skips Python's start-up and those imports. A bundle with requirements has
them in its snapshot too: the modules its plug-ins import from them (FastAPI, Pydantic) are
imported before it is taken, and compiled ones' shared libraries are loaded first thing, before
Python starts, in Node and again in the browser before the heap is restored (so each lands at
the same addresses; ``valor-worker.js``). What may go in: imported modules
and their constants. What must not: plug-ins (their ``on_create`` runs at boot, so their state
is fresh), JavaScript objects (a heap cannot carry them; ``js`` is not imported), anything of
the build machine (the environment is reset to what a browser has), and any state that must
differ between boots: ``restore`` reseeds ``random`` and the request-id generator. Python's
string-hash seed is chosen at start-up and cannot be changed later, so every boot from one
snapshot hashes strings alike; nothing in Valor depends on it being random.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import random
import struct
import sys
import warnings
from collections.abc import Iterable

MODULES = (
    "valor.browser",  # and with it every kind's browser engine (valor.kinds.browser_loaders)
    "pyodide.code",
    "pyodide.ffi",
    "pyodide.webloop",
    "zipfile",
    "sysconfig",
    # What plug-ins often import that the runtime does not: a module imported at boot costs a
    # plug-in's load (and so its first answer) tens of ms, in the snapshot nothing.
    "base64",
    "datetime",
    "hashlib",
    "hmac",
    "secrets",
    "uuid",
)
"""Imported before the snapshot is taken: the runtime, every kind's loader, what they import
lazily, and the standard modules plug-ins often import."""

# The environment of a browser boot (Emscripten's defaults and Pyodide's own); the LANG of the
# visitor's browser is set after restoring.
BROWSER_ENVIRON = {
    "USER": "web_user",
    "LOGNAME": "web_user",
    "PATH": "/",
    "PWD": "/",
    "HOME": "/home/pyodide",
    "LANG": "C.UTF-8",
    "_": "./this.program",
}
KEPT = {"PYTHONINSPECT", "LD_LIBRARY_PATH"}  # set by Pyodide itself, the same everywhere

key: str | None = None
"""The build key the snapshot was made for (``None`` outside a snapshot)."""


class SnapshotMismatch(Exception):
    """A snapshot made for another build."""


def prepare(build_key: str, requirements: Iterable[str] = ()) -> list[str]:
    """Called in Node just before the snapshot is taken: imports the runtime's modules, then
    ``requirements``, the modules the plug-ins import from their requirements, and every
    module of their packages. Returns those that failed to import (left to the plug-in's own
    import at boot, which reports it)."""
    global key
    _browser_environ()  # before the imports too: a requirement may read it when imported
    for name in MODULES:
        importlib.import_module(name)
    failed: list[str] = []
    for name in requirements:
        _try_import(name, failed)
    for top in dict.fromkeys(name.split(".", 1)[0] for name in requirements):
        _import_submodules(top, failed)
    if "js" in sys.modules:
        raise RuntimeError("the js module was imported: a snapshot must hold no JS objects")
    _browser_environ()
    key = build_key
    return failed


def _try_import(name: str, failed: list[str]) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a deprecation warning is the plug-in's to see
            importlib.import_module(name)
    except BaseException:  # any failure (even SystemExit): a plug-in's own import reports it
        failed.append(name)


def _import_submodules(top: str, failed: list[str]) -> None:
    """Every module of an imported package: what a plug-in's import of it leaves for later
    runs at boot otherwise (FastAPI imports ``pydantic.v1`` when it mounts a route, Pydantic
    imports its parts as they are first named: seconds of a boot)."""
    package = sys.modules.get(top)
    if package is None or not hasattr(package, "__path__"):
        return
    for module in pkgutil.walk_packages(package.__path__, f"{top}.", onerror=failed.append):
        if module.name not in sys.modules and not _skipped(module.name):
            _try_import(module.name, failed)


def _skipped(name: str) -> bool:
    parts = name.split(".")
    return "tests" in parts or "testing" in parts or parts[-1] == "__main__"


def _browser_environ() -> None:
    for name in list(os.environ):
        if name not in BROWSER_ENVIRON and name not in KEPT:
            del os.environ[name]
    os.environ.update(BROWSER_ENVIRON)


def restore(build_key: str, language: str) -> None:
    """Called in the browser right after booting from the snapshot: check that it was made for
    this build, then renew what must differ between boots."""
    if key != build_key:
        raise SnapshotMismatch(f"it was made for build {key}, this is build {build_key}")
    from .access import reseed_request_ids

    random.seed()
    reseed_request_ids()
    os.environ["LANG"] = f"{language.replace('-', '_', 1)}.UTF-8" if language else "C.UTF-8"


# -- the file the bundle ships ------------------------------------------------------------------
#
# Half of the heap is pages of zeros (memory Python has not used yet). The bundle stores only
# the other pages, so a visit reads half the bytes from the cache (and the network); the worker
# puts the heap back together (``inflateSnapshot`` in valor-worker.js) before Pyodide restores
# it. Layout, little-endian: the magic, the heap's size, the page size and the page count (u32
# each), one byte per page (1: stored, 0: zeros), then the stored pages in order (the last one
# may be short).

MAGIC = b"VALORSN1"
PAGE = 64 * 1024
_HEADER = struct.Struct("<8sIII")


def pack(heap: bytes) -> bytes:
    """The heap without its pages of zeros."""
    pages = [heap[start : start + PAGE] for start in range(0, len(heap), PAGE)]
    stored = bytes(page.count(0) != len(page) for page in pages)
    kept = (page for page, keep in zip(pages, stored, strict=True) if keep)
    return b"".join([_HEADER.pack(MAGIC, len(heap), PAGE, len(pages)), stored, *kept])


def unpack(packed: bytes) -> bytes:
    """The heap again (what the worker does in JavaScript; for tools and tests)."""
    magic, size, page, count = _HEADER.unpack_from(packed)
    if magic != MAGIC:
        raise ValueError("not a packed memory snapshot")
    heap = bytearray(size)
    offset = _HEADER.size + count
    for index, keep in enumerate(packed[_HEADER.size : _HEADER.size + count]):
        if keep:
            end = min((index + 1) * page, size)
            heap[index * page : end] = packed[offset : offset + end - index * page]
            offset += end - index * page
    return bytes(heap)
