"""Retries with backoff, and what the API answers when a backend is down."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import create_async_engine

from lg_deploy.api.deps import Backends, BackendsFactory
from lg_deploy.core.errors import LeaseLost
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import Execution
from lg_deploy.core.queue import Queue
from lg_deploy.core.queue.memory import MemoryQueue
from lg_deploy.core.queue.redis import RedisQueue
from lg_deploy.core.states import Status
from lg_deploy.core.store import Outcome, Store, open_store
from lg_deploy.core.store.migrate import migrate
from lg_deploy.core.store.sql import SQLStore
from lg_deploy.worker.fencing import LeaseClock, OutsideAnAttempt, fence, fenced
from tests.conftest import PgAdmin, libpq_url, make_settings, serve_in_process, submit, wait
from tests.test_migrations import new_execution


async def test_a_retryable_failure_is_retried_with_backoff_until_it_succeeds(
    sqlite_url: str, registry: GraphRegistry, tmp_path: Path
) -> None:
    """An exception marked retryable is retried (backoff, each failure recorded) and the
    execution completes on its third attempt."""
    await migrate(sqlite_url)
    settings = make_settings(sqlite_url, retry_backoff_s=0.1)
    async with serve_in_process(settings, registry) as client:
        counter = tmp_path / "tries.txt"
        execution_id = await submit(
            client, "flaky", {"counter_file": str(counter), "failures": 2}, max_attempts=3
        )
        record = await wait(client, execution_id)
    assert record["status"] == "COMPLETED", record
    assert record["output"]["tries"] == 3
    assert record["attempts"] == 3
    errors = record["attempt_errors"]
    assert [(e["attempt"], e["type"], e["message"]) for e in errors] == [
        (1, "FlakyError", "try 1 failed"),
        (2, "FlakyError", "try 2 failed"),
    ]


async def test_retries_stop_at_max_attempts(
    sqlite_url: str, registry: GraphRegistry, tmp_path: Path
) -> None:
    """A retryable failure that keeps failing is FAILED after max_attempts attempts."""
    await migrate(sqlite_url)
    settings = make_settings(sqlite_url, retry_backoff_s=0.05)
    async with serve_in_process(settings, registry) as client:
        counter = tmp_path / "tries.txt"
        execution_id = await submit(
            client, "flaky", {"counter_file": str(counter), "failures": 10}, max_attempts=2
        )
        record = await wait(client, execution_id)
    assert record["status"] == "FAILED"
    assert record["attempts"] == 2
    assert record["error"] == {"type": "FlakyError", "message": "try 2 failed"}
    assert len(record["attempt_errors"]) == 2
    assert len(counter.read_text().splitlines()) == 2


async def test_errors_the_operator_lists_are_retried_and_others_fail_at_once(
    sqlite_url: str, registry: GraphRegistry
) -> None:
    """LG_DEPLOY_RETRY_ON names error types to retry; an unlisted, unmarked error fails
    on its first attempt."""
    await migrate(sqlite_url)
    listed = make_settings(sqlite_url, retry_on="ValueError", retry_backoff_s=0.05)
    async with serve_in_process(listed, registry) as client:
        retried = await wait(client, await submit(client, "fail", {"message": "x"}))
    assert retried["status"] == "FAILED"
    assert retried["attempts"] == 3  # the server's default max_attempts
    assert len(retried["attempt_errors"]) == 3
    async with serve_in_process(make_settings(sqlite_url), registry) as client:
        at_once = await wait(client, await submit(client, "fail", {"message": "y"}))
    assert at_once["attempts"] == 1
    assert len(at_once["attempt_errors"]) == 1


def given(store: Store, queue: Queue) -> BackendsFactory:
    """Backends the test made itself, closed when the app stops."""

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Backends]:
        try:
            yield Backends(store, queue)
        finally:
            await queue.close()
            await store.close()

    return opened


async def test_database_down_answers_503_with_retry_after(
    sqlite_url: str, registry: GraphRegistry
) -> None:
    """With the database unreachable, the API answers 503 backend_unavailable with
    Retry-After at once, on writes, reads and readiness."""
    dead = given(open_store("postgresql+asyncpg://nobody@127.0.0.1:1/none"), MemoryQueue())
    async with serve_in_process(make_settings(sqlite_url), registry, backends=dead) as client:
        for method, path, body in (
            ("POST", "/execute", {"graph_id": "steps", "input": {}}),
            ("GET", "/executions", None),
            ("GET", "/executions/01a21451-98b8-7000-b6e9-4c8bbd89783d", None),
        ):
            response = await client.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"].isdigit()
            assert response.json()["error"]["code"] == "backend_unavailable"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["queue"] == "ok"
        assert ready.json()["checks"]["database"] != "ok"


@pytest.mark.redis
async def test_redis_down_submissions_are_accepted_and_reads_still_work(
    sqlite_url: str, registry: GraphRegistry
) -> None:
    """With the queue down, POST /execute still commits the execution (202,
    Enqueue-Deferred) for the reconciler to enqueue later, reads work, and the API stays
    ready (degraded)."""
    await migrate(sqlite_url)
    dead = given(open_store(sqlite_url), RedisQueue("redis://127.0.0.1:1/0", connect_timeout_s=1))
    async with serve_in_process(make_settings(sqlite_url), registry, backends=dead) as client:
        response = await client.post("/execute", json={"graph_id": "steps", "input": {}})
        assert response.status_code == 202
        assert response.headers["enqueue-deferred"] == "true"
        execution_id = response.json()["execution_id"]
        got = await client.get(f"/executions/{execution_id}")
        assert got.status_code == 200
        assert got.json()["status"] == "QUEUED"
        # Still ready: it accepts work; the probe says the queue is down.
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["database"] == "ok"
        assert ready.json()["checks"]["queue"] != "ok"


def test_fenced_checkpointer_refuses_writes_once_the_lease_may_have_passed() -> None:
    """After the lease length passes without a renewal, checkpoint writes raise LeaseLost;
    reads still work."""
    clock = LeaseClock("e1", 1, lease_s=0.05, claimed_at=time.monotonic())
    saver = fenced(InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "1"}}

    async def write() -> None:
        with fence(clock):
            await saver.aput_writes(config, [("a", 1)], "task")

    asyncio.run(saver.aget_tuple(config))
    asyncio.run(write())
    time.sleep(0.06)
    with pytest.raises(LeaseLost):
        clock.check()
    with pytest.raises(LeaseLost):
        asyncio.run(write())
    assert asyncio.run(saver.aget_tuple(config)) is None
    clock.renewed(time.monotonic())
    clock.check()
    asyncio.run(write())


async def test_a_write_finds_its_attempt_from_the_tasks_it_starts() -> None:
    """The fence of an attempt holds in the tasks started under it, as LangGraph starts
    one per checkpoint write, and two attempts sharing the view keep their own leases; a
    write made under no attempt is refused rather than let through unfenced."""
    saver = fenced(InMemorySaver())
    config: Any = {"configurable": {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": "1"}}
    held = LeaseClock("held", 1, lease_s=60, claimed_at=time.monotonic())
    lost = LeaseClock("lost", 1, lease_s=60, claimed_at=time.monotonic())
    lost.lost = True
    failures: list[BaseException] = []

    async def attempt(clock: LeaseClock) -> None:
        with fence(clock, failures.append):
            await asyncio.create_task(saver.aput_writes(config, [("a", 1)], clock.execution_id))

    results = await asyncio.gather(attempt(held), attempt(lost), return_exceptions=True)
    assert results[0] is None
    assert isinstance(results[1], LeaseLost)
    assert failures == [results[1]]
    with pytest.raises(OutsideAnAttempt):
        await saver.aput_writes(config, [("a", 1)], "stray")


def new_executions(count: int) -> list[Execution]:
    return [new_execution() for _ in range(count)]


@pytest.mark.postgres
@pytest.mark.parametrize("path", ["sqlalchemy", "asyncpg"])
async def test_a_connection_the_server_closed_is_replaced_unseen(
    pg_url: str, pg_admin: PgAdmin, path: str
) -> None:
    """Pooled connections are not pinged before use: when the server closed them (as a
    restart does), the statement fails on its stale connection and is tried once more on a
    new one, and the caller sees no error. Both ways the store runs statements: through
    SQLAlchemy (a read) and straight on asyncpg (a claim, core/store/direct.py)."""
    store = open_store(pg_url)
    try:
        execution = new_execution()
        # Created together, so that every connection kept for the hot statements (the lanes,
        # core/store/direct.py) goes stale too.
        await asyncio.gather(*(store.create(e) for e in [execution, *new_executions(3)]))
        database = pg_url.rsplit("/", 1)[1]
        closed = pg_admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        assert closed and all(row[0] for row in closed)
        if path == "sqlalchemy":
            got = await store.get(execution.execution_id)
        else:
            claimed = await store.claim(execution.execution_id, "w", 30)
            assert claimed is not None
            got = claimed
        assert got.execution_id == execution.execution_id
    finally:
        await store.close()


def _count_checkouts(engine: Any) -> list[int]:
    checkouts = [0]

    def checkout(*_args: Any) -> None:
        checkouts[0] += 1

    sa_event.listen(engine.sync_engine, "checkout", checkout)
    return checkouts


@pytest.mark.postgres
async def test_the_statements_of_every_execution_run_on_connections_kept_out_of_the_pool(
    pg_url: str,
) -> None:
    """The insert, claim and finish run on connections kept out of the pool (the lanes,
    core/store/direct.py): one after the other, one checkout for all of them, none of the
    greenlets a checkout costs. Statements that find the lanes busy borrow from the pool and
    give back all but two; closing the store returns the lanes."""
    engine = create_async_engine(pg_url)
    store = SQLStore(engine)
    checkouts = _count_checkouts(engine)
    try:
        for _ in range(5):
            execution = new_execution()
            await store.create(execution)
            claimed = await store.claim(execution.execution_id, "w", 30)
            assert claimed is not None
            done = await store.finish(execution.execution_id, 1, Outcome(Status.COMPLETED))
            assert done is not None
        assert checkouts == [1]
        assert engine.pool.checkedout() == 1  # type: ignore[attr-defined]

        together = new_executions(6)
        await asyncio.gather(*(store.create(e) for e in together))
        assert checkouts[0] > 2  # the lanes were busy: the others borrowed from the pool
        assert engine.pool.checkedout() == 2  # type: ignore[attr-defined]
        for execution in together:
            assert (await store.get(execution.execution_id)).status is Status.QUEUED
    finally:
        await store.close()
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    await engine.dispose()


@pytest.mark.postgres
async def test_a_statement_cancelled_on_a_lane_takes_its_connection_out_of_use(
    pg_url: str,
) -> None:
    """A hot statement cancelled midway (a worker stopping) leaves its connection in an
    unknown state: it is discarded, lane or not, and the next statements run on others."""
    import psycopg

    store = open_store(pg_url)
    assert isinstance(store, SQLStore)
    try:
        await store.create(new_execution())  # the first lane
        pool = store.engine.pool
        assert pool.checkedout() == 1  # type: ignore[attr-defined]
        with psycopg.connect(libpq_url(pg_url)) as locker:
            # The insert waits for this lock: it is in flight when it is cancelled.
            locker.execute("LOCK TABLE executions IN ACCESS EXCLUSIVE MODE")
            stuck = asyncio.create_task(store.create(new_execution()))
            await asyncio.sleep(0.3)
            assert not stuck.done()
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            locker.rollback()
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
        execution = new_execution()
        await store.create(execution)
        assert (await store.get(execution.execution_id)).status is Status.QUEUED
    finally:
        await store.close()


@pytest.mark.postgres
@pytest.mark.parametrize(("pool_size", "lanes"), [(1, 0), (3, 1)])
async def test_the_lanes_leave_the_other_statements_half_of_a_small_pool(
    pg_url: str, pool_size: int, lanes: int
) -> None:
    """Kept for the hot statements, the only connection of a pool of one would leave every
    other statement waiting for it: a pool of one keeps none, of three one."""
    store = open_store(pg_url, pool_size=pool_size)
    assert isinstance(store, SQLStore)
    try:
        together = new_executions(4)
        await asyncio.gather(*(store.create(e) for e in together))
        assert store.engine.pool.checkedout() == lanes  # type: ignore[attr-defined]
        for execution in together:
            assert (await store.get(execution.execution_id)).status is Status.QUEUED
    finally:
        await store.close()
