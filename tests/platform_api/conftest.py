"""Fixtures of the platform API tests: one server per target for a whole module, and an
SDK client per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient

from tests.harness import Server
from tests.platform_api.support import dev_server, platform_fleet


@pytest.fixture(
    scope="module",
    params=["dev", pytest.param("fleet", marks=[pytest.mark.postgres, pytest.mark.redis])],
)
def server_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The platform API of `lg-deploy dev` (SQLite, in-process worker and memory event
    log), then of `lg-deploy api` with two `lg-deploy worker`s (PostgreSQL, Redis)."""
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "dev":
        with dev_server(folder) as server:
            yield server.url
        return
    with platform_fleet(request, folder) as fleet:
        api, *_ = fleet.start(apis=1, workers=2)
        assert isinstance(api, Server)
        yield api.url


@pytest.fixture
async def client(server_url: str) -> AsyncIterator[LangGraphClient]:
    """The official SDK's async client for the server under test."""
    sdk = get_client(url=server_url, api_key=None)
    try:
        yield sdk
    finally:
        await sdk.aclose()
