"""The server's wasmtime engines (``valor.kinds.wasm.server``): one epoch ticker for all of
them, and engines freed while it ticks, as a registry change or a shut-down frees a plug-in's
while another plug-in's wasm runs. Each case runs in a process of its own: the fault it
guards against is a crash of the whole process."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

DROPS_ENGINES_WHILE_TICKING = textwrap.dedent(
    """
    import time
    from valor.kinds.wasm import server
    from valor.kinds.wasm.limits import WasmLimits

    limits = WasmLimits(max_memory=1 << 20, fuel=None, timeout=5)
    store = server.new_store(server.make_engine(limits), limits)
    with server.armed(store, limits):  # a call under way: the ticker ticks every engine
        dropped = 0
        end = time.monotonic() + 2
        while time.monotonic() < end:
            engine = server.make_engine(limits)
            del engine  # freed now, by wasmtime's __del__
            dropped += 1
    print("dropped", dropped)
    """
)


@pytest.mark.timeout(60)
def test_engines_freed_while_the_ticker_ticks_leave_the_process_alive() -> None:
    # Before the fix: a segmentation fault within the first ticks, every run (the ticker
    # ticked an engine whose memory wasmtime was freeing).
    done = subprocess.run(
        [sys.executable, "-c", DROPS_ENGINES_WHILE_TICKING],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert done.returncode == 0, f"exited {done.returncode}: {done.stderr[-2000:]}"
    assert int(done.stdout.split()[-1]) > 100  # enough engines freed across many ticks
