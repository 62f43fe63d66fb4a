"""A worker under faults, in-process against a real store and checkpointer: failed and
refused checkpoint writes stop the attempt at once, a graph this worker lacks waits for
another worker, a result too large fails clearly, and a node that blocks the event loop
is named and, past its limit, failed."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest

from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import utcnow
from lg_deploy.core.queue.memory import MemoryQueue
from lg_deploy.core.states import Status
from lg_deploy.core.store import Store
from lg_deploy.core.store.migrate import migrate
from lg_deploy.worker import metrics
from lg_deploy.worker.fencing import LeaseClock
from lg_deploy.worker.leases import LeaseKeeper
from lg_deploy.worker.runner import Limits
from lg_deploy.worker.service import LoopLimits, WorkerService
from tests.conftest import add, eventually, lease_store, runner_for
from tests.harness import lines

Durability = Literal["sync", "async"]


class FailingWrites:
    """The checkpointer, with its ``fail_at``-th ``aput`` raising ``error``; it notes how
    many steps had finished (marker lines) when it did."""

    def __init__(self, saver: Any, fail_at: int, error: Exception, marker: Path) -> None:
        self.view = copy.copy(saver)
        self.calls = 0
        self.steps_done_at_failure: int | None = None
        original = saver.aput

        async def aput(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self.calls == fail_at:
                self.steps_done_at_failure = len(lines(marker))
                raise error
            return await original(*args, **kwargs)

        self.view.aput = aput


class NoRenewals(LeaseKeeper):
    """Leases nobody renews: only the checkpoint writes' own fence can notice that the lease
    has passed (as when the lease keeper's connection is cut)."""

    def __init__(self) -> None:
        pass

    def hold(self, execution_id: uuid.UUID, clock: LeaseClock) -> None:
        pass

    def release(self, execution_id: uuid.UUID) -> None:
        pass


def slow_input(marker: Path, steps: int = 10, sleep_s: float = 0.05) -> dict[str, Any]:
    return {"steps": steps, "sleep_s": sleep_s, "marker_file": str(marker)}


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_a_failed_checkpoint_write_stops_the_attempt_at_once(
    store: Store,
    registry: GraphRegistry,
    checkpointer: Any,
    keeper: LeaseKeeper,
    tmp_path: Path,
    durability: Durability,
) -> None:
    """The checkpointer's database fails on its 4th write: the attempt stops at once (at
    most the step already in flight under "async" durability runs on), it is handed back,
    and the next attempt repeats only the steps whose checkpoints were lost."""
    marker = tmp_path / "steps.txt"
    execution = await add(store, "slow", slow_input(marker))
    outage = psycopg.OperationalError("server closed the connection unexpectedly")
    failing = FailingWrites(checkpointer, 4, outage, marker)
    runner = runner_for(store, registry, failing.view, keeper, durability=durability)
    await runner.run(execution.execution_id)
    handed_back = await store.get(execution.execution_id)
    assert handed_back.status is Status.QUEUED
    assert (handed_back.attempt, handed_back.handbacks) == (1, 1)
    done_at_failure = failing.steps_done_at_failure
    assert done_at_failure is not None and done_at_failure < 10
    ran = lines(marker)
    assert len(ran) <= done_at_failure + (1 if durability == "async" else 0)

    await runner_for(store, registry, checkpointer, keeper, durability=durability).run(
        execution.execution_id
    )
    done = await store.get(execution.execution_id)
    assert done.status is Status.COMPLETED
    runs = Counter(lines(marker))
    assert set(runs) == {str(i) for i in range(1, 11)}
    repeated = {int(step) for step, n in runs.items() if n > 1}
    # Lost with its checkpoint: the step whose write failed, and the one in flight.
    assert repeated <= {done_at_failure, done_at_failure + 1}
    assert max(runs.values()) <= 2


async def test_a_checkpoint_write_the_database_refuses_fails_the_attempt_at_once(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper, tmp_path: Path
) -> None:
    """A write the database refuses (not an outage) under "async" durability stops the
    graph at once and fails the execution with that error, instead of running every later
    step with its checkpoint lost."""
    marker = tmp_path / "steps.txt"
    execution = await add(store, "slow", slow_input(marker, steps=20))
    failing = FailingWrites(checkpointer, 3, ValueError("value too large to store"), marker)
    runner = runner_for(store, registry, failing.view, keeper, durability="async")
    await runner.run(execution.execution_id)
    failed = await store.get(execution.execution_id)
    assert failed.status is Status.FAILED
    assert failed.error == {"type": "ValueError", "message": "value too large to store"}
    assert failing.steps_done_at_failure is not None
    assert len(lines(marker)) <= failing.steps_done_at_failure + 1 < 20


async def test_a_lease_taken_over_stops_the_graph_at_its_next_write(
    store: Store, registry: GraphRegistry, checkpointer: Any, tmp_path: Path
) -> None:
    """With nobody renewing its lease, the attempt's next checkpoint write after the lease
    passed is refused and stops the graph at once (under "async" durability too), so it
    neither runs on beside the worker that took it over nor writes anything."""
    marker = tmp_path / "steps.txt"
    execution = await add(store, "slow", slow_input(marker, steps=40))
    lease_s = 0.5
    runner = runner_for(
        store, registry, checkpointer, NoRenewals(), lease_s=lease_s, durability="async"
    )
    task = asyncio.create_task(runner.run(execution.execution_id))
    await eventually(lambda: len(lines(marker)) >= 1, what="a first step")
    # Another worker's reconciler takes the lease over, and another worker claims it.
    await store.requeue_expired(utcnow() + timedelta(hours=1))
    assert await store.claim(execution.execution_id, "the-new-owner", 60) is not None
    await asyncio.wait_for(task, timeout=10)
    # 0.05 s steps: about lease / step steps fit in the lease, and one more may be in flight.
    assert len(lines(marker)) <= lease_s / 0.05 + 2
    taken = await store.get(execution.execution_id)
    assert taken.status is Status.RUNNING
    assert (taken.lease_owner, taken.attempt) == ("the-new-owner", 2)


async def test_a_graph_this_worker_lacks_waits_for_a_worker_that_has_it(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """An execution of a graph missing from this worker's langgraph.json (a rolling deploy)
    is handed back for another worker, without using an attempt; once no worker took it in
    time it fails as unknown_graph, naming the graph."""
    execution = await add(store, "steps", {"text": "x"})
    lacking = GraphRegistry(path=registry.path, graphs={"slow": registry.graphs["slow"]})
    runner = runner_for(store, lacking, checkpointer, keeper)
    await runner.run(execution.execution_id)
    waiting = await store.get(execution.execution_id)
    assert waiting.status is Status.QUEUED
    assert waiting.attempts_used == 0
    assert waiting.not_before is not None and waiting.not_before > utcnow()
    # A worker that has the graph runs it once its short wait is over.
    await asyncio.sleep(max((waiting.not_before - utcnow()).total_seconds(), 0) + 0.05)
    await runner_for(store, registry, checkpointer, keeper).run(execution.execution_id)
    assert (await store.get(execution.execution_id)).status is Status.COMPLETED

    late = await add(store, "steps", {"text": "y"})
    strict = runner_for(
        store, lacking, checkpointer, keeper, limits=Limits(unknown_graph_grace_s=0)
    )
    await strict.run(late.execution_id)
    failed = await store.get(late.execution_id)
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error["type"] == "unknown_graph"
    assert "'steps'" in failed.error["message"]


async def test_a_result_over_the_limit_fails_naming_the_limit(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """A graph whose result is larger than LG_DEPLOY_MAX_OUTPUT_BYTES fails as
    output_too_large, with the size and the limit, and stores no output."""
    execution = await add(store, "steps", {"text": "x" * 500})
    limited = runner_for(store, registry, checkpointer, keeper, limits=Limits(max_output_bytes=200))
    await limited.run(execution.execution_id)
    failed = await store.get(execution.execution_id)
    assert failed.status is Status.FAILED
    assert failed.output is None
    assert failed.error is not None and failed.error["type"] == "output_too_large"
    assert "over the limit of 200" in failed.error["message"]


async def blocking_worker(
    database_url: str, registry: GraphRegistry, checkpointer: Any, **limits: float
) -> tuple[Store, WorkerService]:
    from lg_deploy.core.store import open_store

    store = open_store(database_url)
    worker = WorkerService(
        store,
        MemoryQueue(),
        registry,
        checkpointer,
        open_lease_store=lease_store(database_url),
        lease_s=1.0,
        loop_limits=LoopLimits(**limits),
    )
    await worker.start()
    return store, worker


@pytest.mark.postgres
async def test_a_node_blocking_the_event_loop_is_named_and_others_keep_their_leases(
    pg_url: str, registry: GraphRegistry, tmp_path: Path
) -> None:
    """An async node that blocks the loop for longer than a lease (1 s) is detected and
    counted against its graph; the lease keeper's thread renews every lease meanwhile, so
    neither it nor an execution running beside it is taken over. (On PostgreSQL: on
    SQLite a loop blocked in the middle of the other execution's checkpoint write holds
    the database's one write lock, and the renewals wait for it: docs/architecture.md.)"""
    from lg_deploy.core.checkpoint import open_checkpointer

    await migrate(pg_url)
    blocked_before = metrics.LOOP_BLOCKED.labels("loop_blocker")._value.get()
    async with open_checkpointer(pg_url) as checkpointer:
        store, worker = await blocking_worker(
            pg_url, registry, checkpointer, warn_s=0.3, limit_s=30
        )
        try:
            marker = tmp_path / "steps.txt"
            beside = await add(store, "slow", slow_input(marker, steps=6, sleep_s=0.3))
            blocker = await add(store, "loop_blocker", {"block_s": 2.5})
            for execution in (beside, blocker):
                await worker.queue.enqueue(execution.execution_id)

            async def both_done() -> bool:
                got = [await store.get(e.execution_id) for e in (beside, blocker)]
                return all(g.status is Status.COMPLETED for g in got)

            await eventually(both_done, what="both executions completed")
            for execution in (beside, blocker):
                assert (await store.get(execution.execution_id)).attempt == 1
            assert Counter(lines(marker)) == Counter(str(i) for i in range(1, 7))
            assert metrics.LOOP_BLOCKED.labels("loop_blocker")._value.get() == blocked_before + 1
        finally:
            await worker.stop()
            await store.close()


async def test_a_loop_blocked_past_its_limit_fails_the_blocking_execution(
    sqlite_url: str, registry: GraphRegistry
) -> None:
    """Past LG_DEPLOY_LOOP_BLOCK_LIMIT_S the worker is stuck: its liveness says so while it
    lasts, and the execution that blocked it fails as event_loop_blocked, naming the node,
    rather than blocking the next worker too."""
    from lg_deploy.core.checkpoint import open_checkpointer

    await migrate(sqlite_url)
    async with open_checkpointer(sqlite_url) as checkpointer:
        store, worker = await blocking_worker(
            sqlite_url, registry, checkpointer, warn_s=0.2, limit_s=0.8
        )
        reasons: list[str] = []
        watching = threading.Event()

        def watch_liveness() -> None:  # a probe, from another thread, as Kubernetes would
            while not watching.is_set():
                if reason := worker.alive():
                    reasons.append(reason)
                time.sleep(0.05)

        prober = threading.Thread(target=watch_liveness)
        prober.start()
        try:
            blocker = await add(store, "loop_blocker", {"block_s": 2.0})
            await worker.queue.enqueue(blocker.execution_id)

            async def failed() -> bool:
                return (await store.get(blocker.execution_id)).status is Status.FAILED

            await eventually(failed, what="the blocking execution failed")
            record = await store.get(blocker.execution_id)
            assert record.error is not None
            assert record.error["type"] == "event_loop_blocked"
            assert "'block_the_loop'" in record.error["message"]
            assert any("event loop has been blocked" in r for r in reasons)
            assert worker.alive() is None  # the loop runs again
        finally:
            watching.set()
            prober.join()
            await worker.stop()
            await store.close()
