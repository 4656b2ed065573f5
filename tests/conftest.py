from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import MANIFEST, Server, valor_server

REGISTRY_TOKEN = "test-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``valor serve plugins/plugins.json`` with the registry on, fresh for each test module."""
    with valor_server(
        MANIFEST,
        "--registry",
        "--token",
        REGISTRY_TOKEN,
        log_dir=tmp_path_factory.mktemp("server"),
    ) as running:
        yield running
