"""Retention (docs/operations.md, "Retention"), on SQLite and PostgreSQL: what a prune pass
deletes, what it never deletes, and that everything it keeps still reads, resumes and
completes. Time is driven by passing ``now`` to the pass."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.errors import BackendUnavailable, GraphConfigError
from lg_deploy.core.graphs import GraphRegistry, load_registry
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.models import Execution, Thread, UTCDateTime, utcnow
from lg_deploy.core.retention import Retention
from lg_deploy.core.settings import Settings
from lg_deploy.core.states import Status
from lg_deploy.core.store import Store, open_store
from lg_deploy.core.store.migrate import migrate
from lg_deploy.core.store.prune_statements import due, oldest_due
from lg_deploy.core.store.pruning import PRUNE_LOCK_KEY, PruneReport
from lg_deploy.core.store.sql import SQLStore
from lg_deploy.core.store.statements import C, T
from lg_deploy.worker import metrics
from lg_deploy.worker.leases import LeaseKeeper
from lg_deploy.worker.pruning import PruneSchedule, prune_forever, prune_once
from tests.conftest import EXAMPLES, add, eventually, runner_for, wait
from tests.harness import LG_DEPLOY

DUE = 60.0  # seconds: passed at the pass's "now", an hour on
KEPT = 24 * 3600.0  # seconds: not passed then


def later() -> Any:
    return utcnow() + timedelta(hours=1)


async def checkpoints_of(checkpointer: Any, thread_id: str) -> int:
    return len([c async for c in checkpointer.alist({"configurable": {"thread_id": thread_id}})])


async def force(store: Store, execution_id: Any, **values: Any) -> None:
    """Write a row's columns directly: a state no move of this release produces."""
    assert isinstance(store, SQLStore)
    async with store.engine.begin() as conn:
        await conn.execute(T.update().where(C.execution_id == execution_id).values(**values))


async def test_the_finishing_move_stamps_delete_after_and_running_again_clears_it(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """Guards the stamp: COMPLETED gets finished_at + retention_s, INTERRUPTED its own
    limit (none: never deleted), and a resume clears it so a runnable row is never due."""
    runner = runner_for(store, registry, checkpointer, keeper)
    done = await add(store, "steps", {"text": "a"}, retention_s=DUE)
    await runner.run(done.execution_id)
    record = await store.get(done.execution_id)
    assert record.status is Status.COMPLETED
    assert record.finished_at is not None and record.delete_after is not None
    assert abs((record.delete_after - record.finished_at).total_seconds() - DUE) < 0.01

    paused = await add(store, "approval", {"request": "x"}, retention_s=DUE)
    await runner.run(paused.execution_id)
    record = await store.get(paused.execution_id)
    assert record.status is Status.INTERRUPTED
    assert record.delete_after is None  # no interrupted limit: kept while it waits

    limited = await add(
        store, "approval", {"request": "y"}, retention_s=DUE, interrupted_retention_s=KEPT
    )
    await runner.run(limited.execution_id)
    assert (await store.get(limited.execution_id)).delete_after is not None
    resumed = await store.resume(limited.execution_id, "yes")
    assert resumed.status is Status.QUEUED
    assert resumed.delete_after is None

    forever = await add(store, "steps", {"text": "b"})  # retention_s None: kept for ever
    await runner.run(forever.execution_id)
    assert (await store.get(forever.execution_id)).delete_after is None


async def test_a_prune_deletes_exactly_what_is_due_and_everything_kept_still_runs(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """Guards the policy end to end: of executions of every status on threads of every
    shape, the pass deletes only the due ones that no live work depends on, and every
    execution it keeps still reads, resumes and completes."""
    runner = runner_for(store, registry, checkpointer, keeper)

    async def finished(graph: str, input: Any, thread: str | None = None, **kw: Any) -> Any:
        execution = await add(store, graph, input, thread, **kw)
        await runner.run(execution.execution_id)
        return await store.get(execution.execution_id)

    # Deleted: due, alone on their threads (checkpoints go too).
    completed = await finished("steps", {"text": "a"}, retention_s=DUE)
    failed = await finished("fail", {"message": "no"}, retention_s=DUE)
    cancelled = await add(store, "steps", {"text": "c"}, retention_s=DUE)
    await store.cancel(cancelled.execution_id)
    abandoned = await finished(
        "approval", {"request": "old"}, retention_s=KEPT, interrupted_retention_s=DUE
    )
    assert (completed.status, failed.status, abandoned.status) == (
        Status.COMPLETED,
        Status.FAILED,
        Status.INTERRUPTED,
    )
    # Kept: not due.
    recent = await finished("steps", {"text": "r"}, retention_s=KEPT)
    waiting = await finished("approval", {"request": "w"}, retention_s=DUE)  # no limit
    in_limit = await finished(
        "approval", {"request": "l"}, retention_s=DUE, interrupted_retention_s=KEPT
    )
    # A thread with a due execution and a newer kept one: only the due row goes.
    old_turn = await finished("steps", {"text": "1"}, "long", retention_s=DUE)
    new_turn = await finished("steps", {"text": "2"}, "long", retention_s=KEPT)
    # Threads with live work: queued, running, cancelled but still held by its worker.
    busy_done = await finished("steps", {"text": "q"}, "busy", retention_s=DUE)
    queued = await add(store, "steps", {"text": "q2"}, "busy", retention_s=DUE)
    running_done = await finished("steps", {"text": "r"}, "running", retention_s=DUE)
    running = await add(store, "steps", {"text": "r2"}, "running", retention_s=DUE)
    assert await store.claim(running.execution_id, "another-worker", 600) is not None
    stopping_done = await finished("steps", {"text": "s"}, "stopping", retention_s=DUE)
    stopping = await add(store, "steps", {"text": "s2"}, "stopping", retention_s=DUE)
    await force(
        store,
        stopping.execution_id,
        status="CANCELLED",
        lease_owner="its-worker",
        delete_after=utcnow() - timedelta(days=1),
    )
    # A LangGraph Platform thread: its run goes, its checkpoints (its state) stay.
    assert isinstance(store, SQLStore)
    await store.create_thread(Thread(thread_id="platform"), "raise")
    platform_run = await finished("steps", {"text": "p"}, "platform", retention_s=DUE)

    gone_threads = [completed.thread_id, failed.thread_id, abandoned.thread_id]
    gone_checkpoints = sum([await checkpoints_of(checkpointer, t) for t in gone_threads])
    assert gone_checkpoints > 0
    kept_threads = [recent.thread_id, "long", "busy", "running", "stopping", "platform"]
    kept_checkpoints = {t: await checkpoints_of(checkpointer, t) for t in kept_threads}

    preview = await store.prune(now=later(), dry_run=True, batch_size=2)
    report = await store.prune(now=later(), batch_size=2)  # several batches
    expected = (6, 4, gone_checkpoints)  # executions, emptied threads, checkpoints
    assert (preview.executions, preview.threads, preview.checkpoints) == expected
    assert (report.executions, report.threads, report.checkpoints) == expected
    assert (await store.prune(now=later())).executions == 0  # nothing left to do

    deleted = [completed, failed, cancelled, abandoned, old_turn, platform_run]
    assert await store.with_status([e.execution_id for e in deleted], Status) == set()
    for thread in gone_threads:
        assert await checkpoints_of(checkpointer, thread) == 0
    for thread, count in kept_checkpoints.items():
        assert await checkpoints_of(checkpointer, thread) == count, thread
    survivors = [recent, waiting, in_limit, new_turn, busy_done, queued]
    survivors += [running_done, running, stopping_done, stopping]
    for execution in survivors:
        await store.get(execution.execution_id)  # still reads

    # Everything kept goes on: resumes within their limit, queued and running work ends.
    for paused in (waiting, in_limit):
        await store.resume(paused.execution_id, "yes")
        await runner.run(paused.execution_id)
        record = await store.get(paused.execution_id)
        assert record.status is Status.COMPLETED
        assert record.output["status"] == "published"
    await runner.run(queued.execution_id)
    assert (await store.get(queued.execution_id)).status is Status.COMPLETED
    await store.requeue_expired(utcnow() + timedelta(hours=2))
    await runner.run(running.execution_id)
    assert (await store.get(running.execution_id)).status is Status.COMPLETED
    third = await finished("steps", {"text": "3"}, "long")
    assert third.status is Status.COMPLETED
    assert len(third.output["steps"]) == 6  # the thread's history was not lost


async def test_keeping_the_latest_checkpoints_trims_only_idle_threads_history(
    store: Store, registry: GraphRegistry, checkpointer: Any, keeper: LeaseKeeper
) -> None:
    """Guards "keep the latest N": an idle thread keeps its newest N checkpoints and its
    current state, unchanged; a busy thread and a platform thread keep everything; the
    trimmed thread still runs on from its state."""
    runner = runner_for(store, registry, checkpointer, keeper)
    for thread in ("idle", "busy", "platform"):
        for text in ("a", "b", "c"):
            execution = await add(store, "steps", {"text": text}, thread)
            await runner.run(execution.execution_id)
    assert isinstance(store, SQLStore)
    await store.create_thread(Thread(thread_id="platform"), "raise")
    queued = await add(store, "steps", {"text": "d"}, "busy")
    config = {"configurable": {"thread_id": "idle"}}
    before = await checkpointer.aget_tuple(config)
    counts = {t: await checkpoints_of(checkpointer, t) for t in ("idle", "busy", "platform")}
    assert counts["idle"] > 3

    preview = await store.prune(now=later(), keep_checkpoints=3, dry_run=True)
    report = await store.prune(now=later(), keep_checkpoints=3)
    assert report.executions == 0
    assert preview.checkpoints == report.checkpoints == counts["idle"] - 3
    assert await checkpoints_of(checkpointer, "idle") == 3
    assert await checkpoints_of(checkpointer, "busy") == counts["busy"]
    assert await checkpoints_of(checkpointer, "platform") == counts["platform"]
    after = await checkpointer.aget_tuple(config)
    assert after.checkpoint["id"] == before.checkpoint["id"]
    assert after.checkpoint["channel_values"] == before.checkpoint["channel_values"]

    await runner.run(queued.execution_id)
    next_turn = await add(store, "steps", {"text": "e"}, "idle")
    await runner.run(next_turn.execution_id)
    record = await store.get(next_turn.execution_id)
    assert record.status is Status.COMPLETED
    assert len(record.output["steps"]) == 8  # four turns of two steps: the state was kept


async def test_an_idempotency_key_is_free_again_once_its_execution_is_pruned(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """Guards the documented expiry of keys: within the retention a retry replays the
    execution; after its prune the same request makes a new execution, not a conflict."""
    body = {"graph_id": "steps", "input": {"text": "k"}, "retention_s": 0}
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/execute", json=body, headers=headers)
    assert first.status_code == 202, first.text
    done = await wait(client, first.json()["execution_id"])
    assert done["delete_after"] is not None  # shown, so a client knows when its key expires
    replay = await client.post("/execute", json=body, headers=headers)
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert replay.json()["execution_id"] == first.json()["execution_id"]

    pruner = open_store(database_url)
    try:
        assert (await pruner.prune(now=later())).executions == 1
    finally:
        await pruner.close()
    again = await client.post("/execute", json=body, headers=headers)
    assert again.status_code == 202, again.text
    assert "Idempotent-Replayed" not in again.headers
    assert again.json()["execution_id"] != first.json()["execution_id"]
    assert (await wait(client, again.json()["execution_id"]))["status"] == "COMPLETED"


@pytest.mark.parametrize(
    "field, value",
    [
        ("retention_s", -1),
        ("retention_s", "3600"),
        ("interrupted_retention_s", -0.5),
        ("retention_s", 1e12),
    ],
)
async def test_a_bad_retention_at_submit_is_422_and_writes_nothing(
    sqlite_client: httpx.AsyncClient, field: str, value: Any
) -> None:
    """Guards invariant 7 for the new fields: a negative, non-numeric or absurd retention
    is refused with a machine-readable 422, and no execution is written."""
    response = await sqlite_client.post("/execute", json={"graph_id": "steps", field: value})
    assert response.status_code == 422, response.text
    assert (await sqlite_client.get("/executions")).json()["items"] == []


def test_the_request_wins_over_the_graph_which_wins_over_the_server(tmp_path: Path) -> None:
    """Guards the precedence of the policy knobs: request, then LG_DEPLOY_GRAPH_RETENTION,
    then langgraph.json's "retention", then LG_DEPLOY_RETENTION_S, key by key."""
    config = tmp_path / "langgraph.json"
    config.write_text(
        json.dumps(
            {
                "graphs": {"steps": str(EXAMPLES.parent / "graphs" / "steps.py") + ":graph"},
                "retention": {"steps": {"finished_s": 600, "interrupted_s": None}},
            }
        )
    )
    registry = load_registry(config)
    settings = Settings(_env_file=None, retention_s=100, interrupted_retention_s=50)  # type: ignore[call-arg]
    policy = settings.retention_policy(registry)
    assert policy.resolve("steps") == Retention(600, None)
    assert policy.resolve("other") == Retention(100, 50)
    assert policy.resolve("steps", finished_s=0) == Retention(0, None)
    overridden = settings.model_copy(update={"graph_retention": "steps=none/30"})
    assert overridden.retention_policy(registry).resolve("steps") == Retention(None, 30)


@pytest.mark.parametrize(
    "section, complaint",
    [
        ({"steps": {"finished_s": -1}}, ">= 0"),
        ({"steps": {"kept": 5}}, "finished_s"),
        ({"nope": {"finished_s": 5}}, "not a graph"),
    ],
)
def test_a_bad_retention_in_langgraph_json_fails_at_start_up(
    tmp_path: Path, section: dict[str, Any], complaint: str
) -> None:
    """Guards start-up: a retention langgraph.json gets wrong names the graph and why."""
    config = tmp_path / "langgraph.json"
    graphs = {"steps": str(EXAMPLES.parent / "graphs" / "steps.py") + ":graph"}
    config.write_text(json.dumps({"graphs": graphs, "retention": section}))
    with pytest.raises(GraphConfigError, match=complaint):
        load_registry(config)


def test_a_bad_graph_retention_setting_is_refused() -> None:
    """Guards the setting's syntax: a wrong LG_DEPLOY_GRAPH_RETENTION stops start-up."""
    with pytest.raises(ValueError, match="not a number"):
        Settings(_env_file=None, graph_retention="steps=soon")  # type: ignore[call-arg]


@pytest.mark.postgres
async def test_a_submission_holds_its_threads_lock_until_it_commits(pg_url: str) -> None:
    """Guards the ordering with the pruner: the INSERT of an execution holds a shared lock
    on its thread until its transaction ends, so the pruner's exclusive try fails."""
    store = open_store(pg_url)
    assert isinstance(store, SQLStore)
    try_lock = sa.text("SELECT pg_try_advisory_xact_lock(hashtext('held'))")
    execution = Execution(execution_id=new_execution_id(), graph_id="steps", thread_id="held")
    try:
        async with store.engine.connect() as submitting, store.engine.connect() as pruning:
            transaction = await submitting.begin()
            await store._insert(submitting, execution)
            assert (await pruning.execute(try_lock)).scalar() is False
            await pruning.rollback()
            await transaction.commit()
            assert (await pruning.execute(try_lock)).scalar() is True
            await pruning.rollback()
    finally:
        await store.close()


@pytest.mark.postgres
async def test_a_prune_racing_a_submission_on_the_thread_keeps_its_checkpoints(
    pg_url: str, registry: GraphRegistry, keeper: LeaseKeeper
) -> None:
    """Guards the race found before: the pass deletes the thread's last execution while a
    new one on the thread is being inserted; it must skip the thread's checkpoints, and
    the new execution continues the thread's state."""
    store = open_store(pg_url)
    assert isinstance(store, SQLStore)
    try:
        async with open_checkpointer(pg_url) as checkpointer:
            runner = runner_for(store, registry, checkpointer, keeper)
            old = await add(store, "steps", {"text": "a"}, "raced", retention_s=DUE)
            await runner.run(old.execution_id)
            kept = await checkpoints_of(checkpointer, "raced")
            new = Execution(
                execution_id=new_execution_id(),
                graph_id="steps",
                thread_id="raced",
                input={"text": "b"},
            )
            async with store.engine.connect() as submitting:
                transaction = await submitting.begin()
                await store._insert(submitting, new)
                report = await store.prune(now=later())
                await transaction.commit()
            assert (report.executions, report.threads, report.skipped_threads) == (1, 0, 1)
            assert await checkpoints_of(checkpointer, "raced") == kept
            await runner.run(new.execution_id)
            record = await store.get(new.execution_id)
            assert record.status is Status.COMPLETED
            assert len(record.output["steps"]) == 4  # it went on from the thread's state
    finally:
        await store.close()


@pytest.mark.postgres
async def test_one_prune_pass_runs_at_a_time(pg_url: str) -> None:
    """Guards the election: while another session holds the pruner's lock (another
    worker's pass), a pass deletes nothing and says it did not run."""
    store = open_store(pg_url)
    assert isinstance(store, SQLStore)
    try:
        due_one = await add(store, "steps", None, retention_s=0)
        await store.cancel(due_one.execution_id)
        async with store.engine.connect() as other:
            await other.execute(sa.select(sa.func.pg_advisory_lock(PRUNE_LOCK_KEY)))
            blocked = await store.prune(now=later())
            await other.execute(sa.select(sa.func.pg_advisory_unlock(PRUNE_LOCK_KEY)))
            await other.commit()
        assert (blocked.ran, blocked.executions) == (False, 0)
        assert (await store.prune(now=later())).executions == 1
    finally:
        await store.close()


class FailsOnce:
    """A store whose first prune pass fails as a database outage would."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls = 0

    async def prune(self, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise BackendUnavailable("database", "dropped")
        return await self.store.prune(**kwargs)

    async def retention_overdue_s(self) -> float:
        return await self.store.retention_overdue_s()


async def test_a_failed_background_pass_is_counted_and_the_next_one_runs(
    sqlite_url: str,
) -> None:
    """Guards the worker: a pass that fails is counted and logged, never ends the loop;
    the next pass deletes what is due and is recorded as the last success."""
    await migrate(sqlite_url)
    store = open_store(sqlite_url)
    failing = FailsOnce(store)
    due_one = await add(store, "steps", None, retention_s=0)
    await store.cancel(due_one.execution_id)
    failures = metrics.PRUNE_FAILURES._value.get()
    pruned = metrics.PRUNED_EXECUTIONS._value.get()
    loop = asyncio.create_task(
        prune_forever(failing, PruneSchedule(interval_s=0.02))  # type: ignore[arg-type]
    )
    try:
        await eventually(lambda: metrics.PRUNED_EXECUTIONS._value.get() == pruned + 1)
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await store.close()
    assert metrics.PRUNE_FAILURES._value.get() == failures + 1
    assert metrics.LAST_PRUNE._value.get() > 0
    assert metrics.RETENTION_OVERDUE._value.get() == 0


def test_lg_deploy_prune_dry_run_counts_and_deletes_nothing(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Guards the command: --dry-run reports what a pass would delete and deletes nothing;
    without it the same counts are deleted."""

    async def seed() -> str:
        await migrate(sqlite_url)
        store = open_store(sqlite_url)
        try:
            execution = await add(store, "steps", None, retention_s=0)
            await store.cancel(execution.execution_id)
            return str(execution.execution_id)
        finally:
            await store.close()

    async def exists(execution_id: str) -> bool:
        store = open_store(sqlite_url)
        try:
            return bool(await store.with_status([uuid.UUID(execution_id)], Status))
        finally:
            await store.close()

    execution_id = asyncio.run(seed())
    env = {**os.environ, "LG_DEPLOY_DATABASE_URL": sqlite_url, "LG_DEPLOY_CONFIG": "unused"}
    command = [str(LG_DEPLOY), "prune"]
    dry = subprocess.run(
        [*command, "--dry-run"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    assert "would delete: 1 executions, 1 threads' checkpoints, 0 checkpoints" in dry.stdout
    assert asyncio.run(exists(execution_id))
    real = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert real.returncode == 0, real.stderr
    assert "deleted: 1 executions" in real.stdout
    assert not asyncio.run(exists(execution_id))


async def test_on_sqlite_a_batch_reads_the_partial_indexes_not_the_table(sqlite_url: str) -> None:
    """Guards the pass's cost on SQLite, which has no statistics to plan by: the batch
    finds its rows through the delete_after index and checks each thread in the partial
    indexes of its live work, never through the status index or a scan (a quadratic
    pass on a large table)."""
    await migrate(sqlite_url)
    store = open_store(sqlite_url)
    assert isinstance(store, SQLStore)
    picked = oldest_due(sa.literal(utcnow(), UTCDateTime()), 500).subquery("picked")
    batch = (
        T.delete()
        .where(C.execution_id.in_(sa.select(picked.c.execution_id)))
        .where(due(T, sa.literal(utcnow(), UTCDateTime())))
    )
    try:
        async with store.engine.connect() as conn:
            compiled = batch.compile(conn.engine, compile_kwargs={"render_postcompile": True})
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())
            plan = [
                row[-1]
                for row in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)
            ]
    finally:
        await store.close()
    assert "SEARCH pick USING INDEX ix_executions_delete_after" in " ".join(plan), plan
    for index in ("queued_thread", "running_thread", "stopping_thread"):
        assert any(f"_{index} (thread_id=?)" in step for step in plan), (index, plan)
    assert not any("SCAN executions" in step or "status_queued_at" in step for step in plan)


class AnotherWorkerPrunes:
    """A store whose pass lock another worker holds."""

    async def prune(self, **kwargs: Any) -> PruneReport:
        return PruneReport(ran=False)


async def test_a_worker_whose_turn_it_is_not_reports_no_stale_backlog() -> None:
    """Guards LgDeployPruningBehind against a stale gauge: a worker that did not run the
    pass resets the overdue age it saw earlier, so the max over workers is the current
    pass's."""
    metrics.RETENTION_OVERDUE.set(7200)
    report = await prune_once(AnotherWorkerPrunes(), PruneSchedule())  # type: ignore[arg-type]
    assert report.ran is False
    assert metrics.RETENTION_OVERDUE._value.get() == 0
