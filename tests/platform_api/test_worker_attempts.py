"""What an attempt of a platform run leaves behind when it loses its lease or its
database: runs created through the platform API (in process, on SQLite and PostgreSQL),
claimed and run as a worker runs them (``worker/runner.py``), with the real fencing of
``worker/fencing.py``."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.api.deps import Backends
from lg_deploy.core.errors import BackendUnavailable, LeaseLost
from lg_deploy.core.events import START
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import Execution
from lg_deploy.core.platform.runs import RunOptions
from lg_deploy.core.store.migrate import migrate
from lg_deploy.core.store.platform_base import PlatformStore
from lg_deploy.run.wiring import open_backends
from lg_deploy.worker.fencing import LeaseClock, fence, fenced
from lg_deploy.worker.platform_run import PlatformRun, run_platform
from lg_deploy.worker.resume import graph_config
from tests.conftest import make_settings, serve_in_process

pytestmark = pytest.mark.timeout(60)

LEASE_S = 30.0


@dataclass
class Platform:
    """The platform API without a worker, and the backends it shares with the test."""

    http: httpx.AsyncClient
    backends: Backends
    registry: GraphRegistry

    @property
    def store(self) -> PlatformStore:
        return self.backends.store  # type: ignore[return-value]

    @property
    def checkpointer(self) -> BaseCheckpointSaver:
        assert self.backends.checkpointer is not None
        return self.backends.checkpointer


@contextlib.asynccontextmanager
async def platform_on(database_url: str, registry: GraphRegistry) -> AsyncIterator[Platform]:
    settings = make_settings(database_url)
    async with open_backends(settings, events=True, checkpointer=True) as backends:

        @contextlib.asynccontextmanager
        async def shared() -> AsyncIterator[Backends]:
            yield backends

        async with serve_in_process(settings, registry, backends=shared) as http:
            yield Platform(http, backends, registry)


@pytest.fixture
async def platform(database_url: str, registry: GraphRegistry) -> AsyncIterator[Platform]:
    async with platform_on(database_url, registry) as made:
        yield made


@pytest.fixture
async def sqlite_platform(sqlite_url: str, registry: GraphRegistry) -> AsyncIterator[Platform]:
    await migrate(sqlite_url)
    async with platform_on(sqlite_url, registry) as made:
        yield made


async def claimed_run(platform: Platform, thread_id: str, body: dict[str, Any]) -> Execution:
    """A run created through the API, then claimed as a worker claims it."""
    response = await platform.http.post(f"/threads/{thread_id}/runs", json=body)
    assert response.status_code == 200, response.text
    execution = await platform.store.claim(
        uuid.UUID(response.json()["run_id"]), "test-worker", LEASE_S
    )
    assert execution is not None
    return execution


async def attempt(
    platform: Platform,
    execution: Execution,
    clock: LeaseClock,
    checkpointer: BaseCheckpointSaver | None = None,
) -> Any:
    """Run one attempt as ``Runner._invoke`` does: the graph on a checkpointer fenced on
    ``clock``, its stream fenced on the same lease."""
    saver = fenced(checkpointer or platform.checkpointer)
    config = graph_config(execution)
    graph = await platform.registry.build(execution.graph_id, config, saver)
    options = RunOptions.of(execution)
    assert options is not None
    run = PlatformRun(graph, config, execution, options, saver, held=clock.held)
    with fence(clock):
        return await run_platform(
            run,
            store=platform.store,
            events=platform.backends.events,
            durability="sync",
            max_output_bytes=1 << 20,
        )


def lost_clock(execution: Execution) -> LeaseClock:
    clock = LeaseClock(str(execution.execution_id), execution.attempt, LEASE_S, time.monotonic())
    clock.lost = True
    return clock


async def stopped(platform: Platform, thread_id: str, execution: Execution) -> None:
    """The cancelled run holds its thread (busy) until its worker lets go, as the runner
    does once the graph has stopped; then the thread is idle, not error."""
    assert (await platform.http.get(f"/threads/{thread_id}")).json()["status"] == "busy"
    assert await platform.store.let_go(execution.execution_id, execution.attempt) is not None
    assert (await platform.http.get(f"/threads/{thread_id}")).json()["status"] == "idle"


async def new_thread(platform: Platform) -> str:
    thread_id: str = (await platform.http.post("/threads", json={})).json()["thread_id"]
    return thread_id


async def test_an_attempt_that_lost_its_lease_leaves_its_thread_alone(platform: Platform) -> None:
    """An attempt whose checkpoint write is refused for a lost lease (LeaseLost) does not
    mark its thread failed: the run goes on elsewhere. Once it is cancelled (which records
    nothing), the thread is idle, not error."""
    thread_id = await new_thread(platform)
    execution = await claimed_run(
        platform, thread_id, {"assistant_id": "steps", "input": {"text": "x"}}
    )
    with pytest.raises(LeaseLost):
        await attempt(platform, execution, lost_clock(execution))
    cancel = await platform.http.post(f"/threads/{thread_id}/runs/{execution.execution_id}/cancel")
    assert cancel.status_code == 202
    await stopped(platform, thread_id, execution)


async def test_an_attempt_whose_database_failed_leaves_its_thread_alone(
    sqlite_platform: Platform, sqlite_url: str
) -> None:
    """An attempt whose checkpoint write fails for a database outage (a read-only SQLite
    database: BackendUnavailable, handed back by the runner) does not mark its thread
    failed either. (SQLite only: its query_only makes the outage.)"""
    platform, database_url = sqlite_platform, sqlite_url
    thread_id = await new_thread(platform)
    execution = await claimed_run(
        platform, thread_id, {"assistant_id": "steps", "input": {"text": "x"}}
    )
    from lg_deploy.core.checkpoint import open_checkpointer

    async with open_checkpointer(database_url) as read_only:
        await read_only.conn.execute("PRAGMA query_only = ON")  # type: ignore[attr-defined]
        clock = LeaseClock(str(execution.execution_id), 1, LEASE_S, time.monotonic())
        with pytest.raises(BackendUnavailable):
            await attempt(platform, execution, clock, read_only)
    await platform.http.post(f"/threads/{thread_id}/runs/{execution.execution_id}/cancel")
    await stopped(platform, thread_id, execution)


async def test_an_attempt_that_lost_its_lease_appends_nothing_more_to_the_stream(
    platform: Platform,
) -> None:
    """Stream appends are fenced on the lease: once the attempt's lease is lost (here
    right after its first update), it appends nothing more to the run's stream, not even
    its end, so that a worker that lost a run cannot write into the stream of the worker
    that took it over."""
    thread_id = await new_thread(platform)
    body = {
        "assistant_id": "slow",
        "input": {"steps": 5, "sleep_s": 0.2},
        "stream_mode": ["updates"],
    }
    execution = await claimed_run(platform, thread_id, body)
    run_id = execution.execution_id
    clock = LeaseClock(str(run_id), 1, LEASE_S, time.monotonic())
    events = platform.backends.events
    assert events is not None

    async def lose_the_lease_at_the_first_update() -> str:
        after = START
        while True:
            for event in await events.read(run_id, after=after, block_s=1):
                after = event.id
                if event.event == "updates":
                    clock.lost = True
                    return event.id

    losing = asyncio.create_task(asyncio.wait_for(lose_the_lease_at_the_first_update(), 30))
    with pytest.raises(LeaseLost):
        await attempt(platform, execution, clock)
    last_held = await losing
    assert await events.read(run_id, after=last_held) == []
