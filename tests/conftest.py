from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.servers import MANIFEST, PARITY_MANIFEST, Server, redis_server, valor_server

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
        log_dir=tmp_path_factory.mktemp("server"),
        env={"VALOR_TOKEN": REGISTRY_TOKEN},  # not --token: argv is visible to every user
    ) as running:
        yield running


@pytest.fixture(scope="module")
def parity_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``valor serve tests/parity/plugins/plugins.json``, fresh for each test module."""
    with valor_server(PARITY_MANIFEST, log_dir=tmp_path_factory.mktemp("parity")) as running:
        yield running


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run browser tests last: Playwright's sync API leaves an event loop running in the main
    thread, which anyio tests after it cannot share."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``redis-server`` on a free port of 127.0.0.1, for the session: its URL."""
    with redis_server(tmp_path_factory.mktemp("redis")) as running:
        yield running.url
