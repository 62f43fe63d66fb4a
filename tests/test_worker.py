"""The worker against a real store and checkpointer: resume semantics
(docs/architecture.md, invariant 4), lease loss, and recovery of what a previous process
left behind."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import utcnow
from lg_deploy.core.queue.memory import MemoryQueue
from lg_deploy.core.states import Status
from lg_deploy.core.store import Recorded, Store
from lg_deploy.worker.leases import LeaseKeeper
from lg_deploy.worker.service import WorkerService
from tests.conftest import add, eventually, lease_store, runner_for
from tests.harness import lines


async def test_crash_before_first_checkpoint_restarts_from_the_original_input(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """On a thread with history, an execution that crashed before its first checkpoint
    runs its own input, not "continue whatever the thread last did"."""
    runner = runner_for(store, registry, checkpointer, keeper)
    first = await add(store, "steps", {"text": "hi"}, thread_id="conv")
    await runner.run(first.execution_id)
    assert (await store.get(first.execution_id)).output["text"] == "HI!"

    second = await add(store, "steps", {"text": "yo"}, thread_id="conv")
    crashed = await store.claim(second.execution_id, "dead-worker", 30)
    assert crashed is not None
    later = utcnow() + timedelta(hours=1)
    assert [w.execution_id for w in await store.requeue_expired(later)] == [second.execution_id]

    await runner.run(second.execution_id)
    done = await store.get(second.execution_id)
    assert done.status is Status.COMPLETED
    assert done.attempt == 2
    assert done.output["text"] == "YO!"
    assert done.output["steps"] == ["upper", "exclaim", "upper", "exclaim"]


async def test_crash_mid_run_resumes_from_the_last_checkpoint(
    store: Store,
    registry: GraphRegistry,
    checkpointer: Any,
    keeper: LeaseKeeper,
    tmp_path: Path,
) -> None:
    """A run stopped after some steps continues from its checkpoint: no finished step
    runs again."""
    marker = tmp_path / "steps.txt"
    execution = await add(
        store, "slow", {"steps": 6, "sleep_s": 0.15, "marker_file": str(marker)}, "t"
    )
    first = runner_for(store, registry, checkpointer, keeper)
    task = asyncio.create_task(first.run(execution.execution_id))
    await eventually(lambda: len(lines(marker)) >= 2)
    task.cancel()  # the process stops: the attempt is handed back
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (await store.get(execution.execution_id)).status is Status.QUEUED
    before = lines(marker)

    await runner_for(store, registry, checkpointer, keeper).run(execution.execution_id)
    done = await store.get(execution.execution_id)
    assert done.status is Status.COMPLETED
    assert done.output["completed"] == [1, 2, 3, 4, 5, 6]
    # Each step ran once, except that the step in flight when it stopped may run again.
    after = lines(marker)
    assert sorted(set(after), key=int) == [str(i) for i in range(1, 7)]
    repeated = [step for step in set(after) if after.count(step) > 1]
    assert repeated in ([], [before[-1]]), after
    assert len(before) >= 2


async def test_a_worker_that_lost_its_lease_stops_and_writes_nothing(
    store: Store,
    registry: GraphRegistry,
    checkpointer: Any,
    keeper: LeaseKeeper,
    tmp_path: Path,
) -> None:
    """When the lease is taken away, the graph stops at the next heartbeat and the
    worker records nothing."""
    marker = tmp_path / "steps.txt"
    execution = await add(store, "slow", {"steps": 50, "sleep_s": 0.05, "marker_file": str(marker)})
    runner = runner_for(store, registry, checkpointer, keeper, lease_s=0.3)
    task = asyncio.create_task(runner.run(execution.execution_id))
    await eventually(lambda: len(lines(marker)) >= 1)
    # Another reconciler decided this lease was dead: the row is QUEUED again.
    expired = await store.requeue_expired(utcnow() + timedelta(hours=1))
    assert [w.execution_id for w in expired] == [execution.execution_id]
    await asyncio.wait_for(task, timeout=5)  # the graph has ended: no step runs after
    assert len(lines(marker)) < 50
    record = await store.get(execution.execution_id)
    assert record.status is Status.QUEUED
    assert record.output is None and record.error is None


async def test_start_up_recovers_queued_and_orphaned_running_executions(
    store: Store, registry: GraphRegistry, checkpointer: Any, database_url: str
) -> None:
    """A new one-process worker finishes what the last process left QUEUED or RUNNING."""
    queued = await add(store, "steps", {"text": "a"})
    orphan = await add(store, "steps", {"text": "b"})
    assert await store.claim(orphan.execution_id, "previous-process", 3600) is not None
    worker = worker_for(store, registry, checkpointer, database_url)
    await worker.start(orphans_are_mine=True)
    try:
        await _wait_completed(store, [queued.execution_id, orphan.execution_id])
    finally:
        await worker.stop()
    assert (await store.get(orphan.execution_id)).attempt == 2


def worker_for(
    store: Store, registry: GraphRegistry, checkpointer: Any, database_url: str, **options: Any
) -> WorkerService:
    """A worker on the in-process queue, with a 5 s lease and a lease keeper of its own."""
    return WorkerService(
        store,
        MemoryQueue(),
        registry,
        checkpointer,
        open_lease_store=lease_store(database_url),
        lease_s=5,
        **options,
    )


async def _wait_completed(store: Store, ids: list[Any]) -> None:
    async def completed() -> bool:
        statuses = [(await store.get(i)).status for i in ids]
        return statuses == [Status.COMPLETED] * len(ids)

    await eventually(completed, what="every execution COMPLETED")


async def test_reconciler_requeues_an_expired_lease_of_another_worker(
    store: Store, registry: GraphRegistry, checkpointer: Any, database_url: str
) -> None:
    """A RUNNING execution whose worker vanished is run again once its lease expires,
    without the start-up shortcut."""
    orphan = await add(store, "steps", {"text": "c"})
    assert await store.claim(orphan.execution_id, "vanished", 0.5) is not None
    worker = worker_for(store, registry, checkpointer, database_url, reconcile_interval_s=0.2)
    await worker.start()
    try:
        await _wait_completed(store, [orphan.execution_id])
    finally:
        await worker.stop()


async def test_stop_hands_running_executions_back(
    store: Store, registry: GraphRegistry, checkpointer: Any, database_url: str
) -> None:
    """Stopping with no drain time hands a running execution back to QUEUED."""
    execution = await add(store, "slow", {"steps": 20, "sleep_s": 0.1})
    worker = worker_for(store, registry, checkpointer, database_url)
    await worker.start()

    async def running() -> bool:
        return (await store.get(execution.execution_id)).status is Status.RUNNING

    await eventually(running, what="the execution running")
    await worker.stop(drain_s=0)
    record = await store.get(execution.execution_id)
    assert record.status is Status.QUEUED
    assert record.lease_owner is None


class FinishFailsOnce:
    """A store whose first finish() fails as if the database dropped: the attempt's
    result is lost, as when a worker dies right after its graph returned."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.failed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def finish(self, *args: Any, **kwargs: Any) -> Recorded | None:
        if not self.failed:
            self.failed = True
            raise BackendUnavailable("database", "dropped")
        return await self._store.finish(*args, **kwargs)


async def test_a_resume_value_never_answers_a_later_interrupt(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """Resumed past its first interrupt, the graph asks a second question and the result
    is lost; the next attempt asks the second question again instead of answering it
    with the first answer."""
    execution = await add(store, "two_questions", {})
    await runner_for(store, registry, checkpointer, keeper).run(execution.execution_id)
    assert (await store.get(execution.execution_id)).status is Status.INTERRUPTED
    await store.resume(execution.execution_id, "first answer")

    flaky = FinishFailsOnce(store)
    await runner_for(flaky, registry, checkpointer, keeper).run(execution.execution_id)
    assert flaky.failed
    assert (await store.get(execution.execution_id)).status is Status.RUNNING
    await store.requeue_expired(utcnow() + timedelta(hours=1))

    await runner_for(store, registry, checkpointer, keeper).run(execution.execution_id)
    paused = await store.get(execution.execution_id)
    assert paused.status is Status.INTERRUPTED
    assert [i["value"] for i in paused.interrupts or []] == ["second question"]
    assert paused.output == {"first": "first answer"}


async def test_a_graphs_own_database_error_fails_the_execution(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """An OperationalError raised by the graph's own database is the graph's failure:
    FAILED on the first attempt, not handed back as if lg-deploy's database were down."""
    execution = await add(store, "odd", {"kind": "own_database"})
    await runner_for(store, registry, checkpointer, keeper).run(execution.execution_id)
    failed = await store.get(execution.execution_id)
    assert failed.status is Status.FAILED
    assert failed.error is not None and failed.error["type"] == "OperationalError"
    assert (failed.attempt, failed.handbacks) == (1, 0)


async def test_results_the_database_would_refuse_are_stored_cleaned(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """NaN in an output and NUL in an error message (refused by PostgreSQL's JSONB) are
    stored as null and U+FFFD instead of leaving the execution RUNNING."""
    output = await add(store, "odd", {"kind": "values"})
    error = await add(store, "odd", {"kind": "nul_error"})
    runner = runner_for(store, registry, checkpointer, keeper)
    await runner.run(output.execution_id)
    await runner.run(error.execution_id)
    done = await store.get(output.execution_id)
    assert done.status is Status.COMPLETED
    assert done.output == {"kind": "values", "values": [None, 1.5]}
    failed = await store.get(error.execution_id)
    assert failed.status is Status.FAILED
    assert failed.error == {"type": "ValueError", "message": "bad\ufffdbyte"}


@pytest.mark.parametrize("durability", ["sync", "exit"])
async def test_an_execution_runs_with_the_durability_it_asked_for(
    store: Store,
    registry: GraphRegistry,
    checkpointer: Any,
    keeper: LeaseKeeper,
    tmp_path: Path,
    durability: str,
) -> None:
    """An execution's own durability reaches LangGraph: "sync" checkpoints every step of a
    4-step graph, "exit" only the end (and so a crash would start it over)."""
    execution = await add(store, "slow", {"steps": 4, "sleep_s": 0}, durability=durability)
    await runner_for(store, registry, checkpointer, keeper, durability="async").run(
        execution.execution_id
    )
    assert (await store.get(execution.execution_id)).status is Status.COMPLETED
    config: Any = {"configurable": {"thread_id": execution.thread_id}}
    saved = [c async for c in checkpointer.alist(config)]
    assert (len(saved) > 4) if durability == "sync" else (len(saved) == 1)


async def test_a_cancelled_graph_stops_before_its_thread_runs_the_next(
    store: Store, registry: GraphRegistry, checkpointer: Any, database_url: str, tmp_path: Path
) -> None:
    """A cancelled graph may take a while to stop (a node cleaning up): the next execution
    of its thread, submitted right after the cancel, starts only once it has stopped, so
    two graphs never run on one thread at once (invariant 5)."""
    marker = tmp_path / "order.txt"
    worker = worker_for(store, registry, checkpointer, database_url)
    await worker.start()
    try:
        first = await add(
            store,
            "stubborn",
            {"name": "A", "sleep_s": 30, "cleanup_s": 1.0, "marker_file": str(marker)},
            "shared",
        )
        await worker.queue.enqueue(first.execution_id)
        await eventually(lambda: lines(marker) == ["A started"], what="A running")
        await store.cancel(first.execution_id)
        await worker.queue.publish("cancelled", first.execution_id)
        second = await add(
            store, "stubborn", {"name": "B", "sleep_s": 0, "marker_file": str(marker)}, "shared"
        )
        await worker.queue.enqueue(second.execution_id)
        await _wait_completed(store, [second.execution_id])
    finally:
        await worker.stop()
    assert lines(marker) == ["A started", "A stopped", "B started", "B finished"]
    cancelled = await store.get(first.execution_id)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.lease_owner is None


async def test_the_reconciler_lets_go_of_a_cancelled_execution_whose_worker_died(
    store: Store, registry: GraphRegistry, checkpointer: Any, database_url: str
) -> None:
    """A worker that died while its cancelled graph was stopping holds the thread only
    until its lease ends: the reconciler lets go and runs the thread's next execution."""
    dead = await add(store, "steps", {"text": "a"}, "orphaned")
    assert await store.claim(dead.execution_id, "vanished", 0.5) is not None
    await store.cancel(dead.execution_id)
    following = await add(store, "steps", {"text": "b"}, "orphaned")
    worker = worker_for(store, registry, checkpointer, database_url, reconcile_interval_s=0.2)
    await worker.start()
    try:
        await worker.queue.enqueue(following.execution_id)  # refused: the thread is held
        await _wait_completed(store, [following.execution_id])
    finally:
        await worker.stop()
    assert (await store.get(dead.execution_id)).lease_owner is None
