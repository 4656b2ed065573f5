"""The ``valor_host`` fixture reads alike on both hosts: Valor's reason phrases (the ones the
server's status lines and ``fetch()``'s ``statusText`` carry, not httpx's), and ``.log()``,
what the host has logged (the server's output, the browser tab's console)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from valor.testing import TestClient

PROBE = """
from valor import Response, vlugin


@vlugin
def on_create(ctx):
    pass


@vlugin
def on_request(ctx, req):
    ctx.log.warning("probe was asked for %s", req.path)
    return Response(b'{"bad": true}', 422, {"content-type": "application/json"})
"""


@pytest.fixture(scope="module")
def valor_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.py").write_text(PROBE)
    manifest = folder / "plugins.json"
    manifest.write_text(
        json.dumps({"plugins": [{"name": "probe", "type": "python", "path": "probe.py"}]})
    )
    return manifest


@pytest.mark.timeout(300)
def test_reason_phrases_and_the_log_read_alike(valor_host: httpx.Client) -> None:
    answer = valor_host.get("/probe/first")
    assert answer.status_code == 422 and answer.json() == {"bad": True}
    assert answer.reason_phrase == "Unprocessable Content", valor_host.name
    deadline = time.monotonic() + 30
    while "probe was asked for /first" not in valor_host.log():  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, valor_host.log()  # type: ignore[attr-defined]
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_the_in_process_client_has_valors_reason_phrases(valor_manifest: Path) -> None:
    with TestClient(valor_manifest) as client:
        assert client.get("/probe").reason_phrase == "Unprocessable Content"
