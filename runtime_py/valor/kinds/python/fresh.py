"""A plug-in's own modules, imported again when their files changed.

A plug-in removed and added again (the registry's ``DELETE`` then ``POST``) is imported again,
but the helper modules it imports (its package's, or those beside its file) would come from
``sys.modules`` as first imported. Valor notes each such module's file, size and time when
imported, and drops them all before a load if one changed: they import each other, so all are
imported again. Unchanged, they stay as they are, so two plug-ins from one package share it,
as under uvicorn. Only modules from the plug-in's own folder are touched, never an installed
or a standard one.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

_imported: dict[str, tuple[str, int, int]] = {}  # module name: (file, size, mtime_ns)


def forget_if_changed(folder: Path, package: bool) -> None:
    """Before a plug-in loads from ``folder``: drop its modules if one of their files changed
    since they were imported. ``package``: ``folder`` is the plug-in's package (its modules
    at any depth), else the folder of a plug-in file (the modules directly in it)."""
    modules = _modules_in(folder, package)
    changed = any(
        (known := _imported.get(name)) is not None
        and (known[0] != file or _signature(file) != known[1:])
        for name, file in modules.items()
    )
    if changed:
        for name in modules:
            sys.modules.pop(name, None)
            _imported.pop(name, None)
        importlib.invalidate_caches()  # a file new since the first import is found too


def remember(folder: Path, package: bool) -> None:
    """After a plug-in loaded from ``folder``: note the files its modules came from."""
    for name, file in _modules_in(folder, package).items():
        if name not in _imported and (signature := _signature(file)) is not None:
            _imported[name] = (file, *signature)


def forget_all() -> None:
    """Drop every plug-in's own modules: the next load of each imports them all again, as in a
    new process (a browser runtime started again in the same interpreter, between tests)."""
    for name in _imported:
        sys.modules.pop(name, None)
    _imported.clear()
    importlib.invalidate_caches()


def _modules_in(folder: Path, package: bool) -> dict[str, str]:
    inside = str(folder.resolve()) + os.sep
    found = {}
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not file.startswith(inside) or name == "__main__":
            continue  # __main__: a script run from the plug-ins' folder is no helper of theirs
        if package or os.sep not in file[len(inside) :]:
            found[name] = file
    return found


def _signature(file: str) -> tuple[int, int] | None:
    try:
        status = os.stat(file)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns
