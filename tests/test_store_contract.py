"""The store contract, run against SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import pytest

from lg_deploy.core.errors import (
    ExecutionActive,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    ThreadBusy,
)
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.models import Execution, utcnow
from lg_deploy.core.states import Status
from lg_deploy.core.store import Outcome, Store, Waiting


def new(thread_id: str | None = None, **fields: Any) -> Execution:
    execution_id = new_execution_id()
    return Execution(
        execution_id=execution_id,
        graph_id=fields.pop("graph_id", "steps"),
        thread_id=thread_id or str(execution_id),
        input={"text": "hi"},
        **fields,
    )


async def test_create_then_get_round_trips_every_field(store: Store) -> None:
    """What is written is what is read, JSON and timestamps included."""
    execution = new(config={"configurable": {"user": "u1"}}, meta={"team": "a"}, timeout_s=5.0)
    _, created = await store.create(execution)
    assert created
    got = await store.get(execution.execution_id)
    assert got.input == {"text": "hi"}
    assert got.config == {"configurable": {"user": "u1"}}
    assert got.meta == {"team": "a"}
    assert got.status is Status.QUEUED
    assert got.timeout_s == 5.0
    assert got.attempt == 0
    assert got.created_at == execution.created_at
    assert got.created_at.tzinfo is not None


async def test_get_unknown_raises_not_found(store: Store) -> None:
    """An unknown id is NotFound, carrying the kind and the id."""
    missing = uuid.uuid4()
    with pytest.raises(NotFound) as info:
        await store.get(missing)
    assert (info.value.kind, info.value.id) == ("execution", str(missing))


async def test_idempotency_key_returns_the_same_execution(store: Store) -> None:
    """The same key and request hash give back the first execution, not a second row."""
    first = new(idempotency_key="k1", request_hash="h1")
    await store.create(first)
    again, created = await store.create(new(idempotency_key="k1", request_hash="h1"))
    assert not created
    assert again.execution_id == first.execution_id
    assert len((await store.list_executions()).items) == 1


async def test_idempotency_key_with_another_request_conflicts(store: Store) -> None:
    """The same key with a different request hash is a conflict and writes nothing."""
    await store.create(new(idempotency_key="k1", request_hash="h1"))
    with pytest.raises(IdempotencyConflict):
        await store.create(new(idempotency_key="k1", request_hash="h2"))
    assert len((await store.list_executions()).items) == 1


async def test_idempotent_retry_on_a_busy_thread_returns_the_first_execution(
    store: Store,
) -> None:
    """With reject_if_thread_busy, a retry of the accepted request (same key and hash)
    returns the first execution instead of ThreadBusy; another request is ThreadBusy."""
    first = new("t", idempotency_key="k", request_hash="h")
    await store.create(first, reject_if_thread_busy=True)
    again, created = await store.create(
        new("t", idempotency_key="k", request_hash="h"), reject_if_thread_busy=True
    )
    assert not created
    assert again.execution_id == first.execution_id
    with pytest.raises(ThreadBusy):
        await store.create(new("t"), reject_if_thread_busy=True)
    with pytest.raises(IdempotencyConflict):
        await store.create(
            new("t", idempotency_key="k", request_hash="other"), reject_if_thread_busy=True
        )


async def test_list_pages_newest_first_with_filters(store: Store) -> None:
    """Cursor pagination visits every row once, newest first; filters narrow it."""
    made = []
    for i in range(7):
        e = new(graph_id="a" if i % 2 else "b", thread_id="t1" if i < 3 else None)
        await store.create(e)
        made.append(e.execution_id)
    seen: list[uuid.UUID] = []
    cursor = None
    while True:
        page = await store.list_executions(limit=3, cursor=uuid.UUID(cursor) if cursor else None)
        seen += [e.execution_id for e in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(made))
    assert {e.graph_id for e in (await store.list_executions(graph_id="a")).items} == {"a"}
    assert len((await store.list_executions(graph_id="a")).items) == 3
    assert len((await store.list_executions(thread_id="t1")).items) == 3
    await store.claim(made[0], "w", 10)
    running = (await store.list_executions(status=Status.RUNNING)).items
    assert [e.execution_id for e in running] == [made[0]]


async def test_claim_takes_a_lease_and_bumps_the_attempt(store: Store) -> None:
    """A claim moves QUEUED to RUNNING with an owner, an expiry and attempt 1."""
    e = new()
    await store.create(e)
    claimed = await store.claim(e.execution_id, "worker-a", 30)
    assert claimed is not None
    assert claimed.status is Status.RUNNING
    assert claimed.attempt == 1
    assert claimed.lease_owner == "worker-a"
    assert claimed.lease_expires_at is not None
    assert claimed.lease_expires_at > utcnow() + timedelta(seconds=20)
    assert claimed.started_at is not None
    assert await store.claim(e.execution_id, "worker-b", 30) is None


async def test_concurrent_claims_have_exactly_one_winner(store: Store) -> None:
    """Of many workers claiming the same execution at once, exactly one wins."""
    e = new()
    await store.create(e)
    results = await asyncio.gather(*(store.claim(e.execution_id, f"w{i}", 30) for i in range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await store.get(e.execution_id)).attempt == 1


async def test_writes_are_fenced_on_the_attempt(store: Store) -> None:
    """After a lease is taken over, the old attempt can neither renew its lease nor
    finish."""
    e = new()
    await store.create(e)
    first = await store.claim(e.execution_id, "zombie", 30)
    assert first is not None
    later = utcnow() + timedelta(hours=1)
    assert [w.execution_id for w in await store.requeue_expired(later)] == [e.execution_id]
    second = await store.claim(e.execution_id, "healthy", 30)
    assert second is not None and second.attempt == 2
    assert await store.renew_leases({e.execution_id: first.attempt}, 30) == set()
    assert not await store.finish(
        e.execution_id, first.attempt, Outcome(Status.COMPLETED, output={"by": "zombie"})
    )
    assert await store.finish(
        e.execution_id, second.attempt, Outcome(Status.COMPLETED, output={"by": "healthy"})
    )
    final = await store.get(e.execution_id)
    assert final.status is Status.COMPLETED
    assert final.output == {"by": "healthy"}
    assert final.finished_at is not None
    assert final.lease_owner is None


async def test_terminal_states_never_change(store: Store) -> None:
    """A COMPLETED execution refuses cancel, resume, a second finish and a claim."""
    e = new()
    await store.create(e)
    claimed = await store.claim(e.execution_id, "w", 30)
    assert claimed is not None
    assert await store.finish(e.execution_id, 1, Outcome(Status.COMPLETED, output=1))
    with pytest.raises(InvalidTransition) as info:
        await store.cancel(e.execution_id)
    assert (info.value.current, info.value.wanted) == (Status.COMPLETED, Status.CANCELLED)
    with pytest.raises(InvalidTransition):
        await store.resume(e.execution_id, "x")
    assert not await store.finish(e.execution_id, 1, Outcome(Status.FAILED))
    assert await store.claim(e.execution_id, "w", 30) is None
    assert (await store.get(e.execution_id)).status is Status.COMPLETED


async def test_renewing_leases_extends_those_still_held(store: Store) -> None:
    """One renewal pushes forward the expiry of every attempt still held, and names the
    ones that are not (taken over, cancelled, finished)."""
    held, cancelled, finished = new(), new(), new()
    claims = {}
    for e in (held, cancelled, finished):
        await store.create(e)
        claimed = await store.claim(e.execution_id, "w", 1)
        assert claimed is not None and claimed.lease_expires_at is not None
        claims[e.execution_id] = claimed
    await store.cancel(cancelled.execution_id)
    assert await store.finish(finished.execution_id, 1, Outcome(Status.COMPLETED))
    leases = {eid: c.attempt for eid, c in claims.items()}
    assert await store.renew_leases(leases, 60) == {held.execution_id}
    assert await store.renew_leases({}, 60) == set()
    renewed = await store.get(held.execution_id)
    expired_at = claims[held.execution_id].lease_expires_at
    assert renewed.lease_expires_at is not None and expired_at is not None
    assert renewed.lease_expires_at > expired_at + timedelta(seconds=30)


async def test_cancel_moves_queued_and_running_to_cancelled(store: Store) -> None:
    """Cancel works from QUEUED and RUNNING, and the worker's later result is dropped."""
    queued, running = new(), new()
    await store.create(queued)
    await store.create(running)
    claimed = await store.claim(running.execution_id, "w", 30)
    assert claimed is not None
    assert (await store.cancel(queued.execution_id)).status is Status.CANCELLED
    assert (await store.cancel(running.execution_id)).status is Status.CANCELLED
    assert await store.renew_leases({running.execution_id: claimed.attempt}, 30) == set()
    assert not await store.finish(running.execution_id, claimed.attempt, Outcome(Status.COMPLETED))
    assert (await store.get(running.execution_id)).status is Status.CANCELLED
    with pytest.raises(NotFound):
        await store.cancel(uuid.uuid4())


async def test_a_cancelled_running_execution_holds_its_thread_until_let_go(store: Store) -> None:
    """Cancelling a RUNNING execution keeps its lease: its graph may still be stopping, so
    the next execution of its thread cannot be claimed, nor the row deleted, until the
    attempt's worker lets go; then the next one comes back in the same round trip."""
    running, following = new(thread_id="t-stop"), new(thread_id="t-stop")
    await store.create(running)
    claimed = await store.claim(running.execution_id, "w", 30)
    assert claimed is not None
    await store.create(following)
    cancelled = await store.cancel(running.execution_id)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.lease_owner == "w"
    assert await store.claim(following.execution_id, "w2", 30) is None
    with pytest.raises(ExecutionActive, match="still stopping"):
        await store.delete(running.execution_id)
    assert await store.let_go(running.execution_id, claimed.attempt + 1) is None  # not its attempt
    recorded = await store.let_go(running.execution_id, claimed.attempt)
    assert recorded is not None and recorded.next_on_thread is not None
    assert recorded.next_on_thread.execution_id == following.execution_id
    assert (await store.get(running.execution_id)).lease_owner is None
    assert await store.let_go(running.execution_id, claimed.attempt) is None  # once only
    assert await store.claim(following.execution_id, "w2", 30) is not None
    await store.cancel(following.execution_id)
    await store.delete(running.execution_id)


async def test_letting_go_of_a_rolled_back_run_deletes_it_in_the_same_statement(
    store: Store,
) -> None:
    """A rolled-back run is deleted as its worker lets go: nobody sees it let go but still
    there (a wait on it would return while it exists), and the next one is named."""
    running, following = new(thread_id="t-roll"), new(thread_id="t-roll")
    await store.create(running)
    claimed = await store.claim(running.execution_id, "w", 30)
    assert claimed is not None
    await store.create(following)
    await store.cancel(running.execution_id)
    recorded = await store.let_go(running.execution_id, claimed.attempt, delete=True)
    assert recorded is not None and recorded.next_on_thread is not None
    assert recorded.next_on_thread.execution_id == following.execution_id
    with pytest.raises(NotFound):
        await store.get(running.execution_id)
    assert await store.claim(following.execution_id, "w2", 30) is not None


async def test_a_cancelled_execution_whose_lease_ended_is_found_to_let_go_of(
    store: Store,
) -> None:
    """A worker that died while its cancelled graph was stopping never lets go: once the
    lease has run out, ``stopping_expired`` finds it for the reconciler to let go of."""
    running, following = new(thread_id="t-dead"), new(thread_id="t-dead")
    await store.create(running)
    assert await store.claim(running.execution_id, "w", 30) is not None
    await store.create(following)
    await store.cancel(running.execution_id)
    assert await store.stopping_expired() == []  # the lease runs on
    later = utcnow() + timedelta(seconds=60)
    [expired] = await store.stopping_expired(later)
    assert (expired.execution_id, expired.attempt) == (running.execution_id, 1)
    recorded = await store.let_go(expired.execution_id, expired.attempt)
    assert recorded is not None and recorded.next_on_thread is not None
    assert recorded.next_on_thread.execution_id == following.execution_id
    assert await store.stopping_expired(later) == []
    assert await store.claim(following.execution_id, "w2", 30) is not None


async def test_interrupt_then_resume_requeues_with_the_value(store: Store) -> None:
    """INTERRUPTED keeps the payload; resume moves it to QUEUED carrying the value."""
    e = new()
    await store.create(e)
    claimed = await store.claim(e.execution_id, "w", 30)
    assert claimed is not None
    payload = [{"id": "i1", "value": {"question": "ok?"}}]
    assert await store.finish(
        e.execution_id, 1, Outcome(Status.INTERRUPTED, output={}, interrupts=payload)
    )
    paused = await store.get(e.execution_id)
    assert paused.status is Status.INTERRUPTED
    assert paused.interrupts == payload
    assert paused.lease_owner is None
    resumed = await store.resume(e.execution_id, {"approved": True})
    assert resumed.status is Status.QUEUED
    assert resumed.resume == {"approved": True}
    assert resumed.has_resume
    with pytest.raises(InvalidTransition):
        await store.resume(e.execution_id, "again")
    again = await store.claim(e.execution_id, "w", 30)
    assert again is not None and again.attempt == 2


async def test_release_hands_back_without_finishing(store: Store) -> None:
    """A released attempt is QUEUED again, claimable, and its old attempt is fenced."""
    e = new()
    await store.create(e)
    claimed = await store.claim(e.execution_id, "w", 30)
    assert claimed is not None
    assert await store.release(e.execution_id, claimed.attempt)
    assert (await store.get(e.execution_id)).status is Status.QUEUED
    assert not await store.release(e.execution_id, claimed.attempt)
    assert await store.claim(e.execution_id, "w2", 30) is not None


async def test_requeue_expired_only_touches_expired_leases(store: Store) -> None:
    """Only RUNNING executions whose lease ended go back to QUEUED."""
    short, long = new(), new()
    await store.create(short)
    await store.create(long)
    await store.claim(short.execution_id, "w", 1)
    await store.claim(long.execution_id, "w", 60)
    later = utcnow() + timedelta(seconds=30)
    assert [w.execution_id for w in await store.requeue_expired(later)] == [short.execution_id]
    assert (await store.get(short.execution_id)).status is Status.QUEUED
    assert (await store.get(long.execution_id)).status is Status.RUNNING


async def test_an_execution_whose_workers_keep_dying_fails_as_worker_lost(
    store: Store,
) -> None:
    """After max_recoveries take-overs, the next expired lease fails the execution with
    worker_lost instead of queueing it again; hand-backs and recorded failures do not count."""
    e = new()
    await store.create(e)
    claimed = await store.claim(e.execution_id, "w", 30)
    assert claimed is not None
    assert await store.release(e.execution_id, claimed.attempt)  # a hand-back: not lost
    for _ in range(2):
        assert await store.claim(e.execution_id, "w", 30) is not None
        later = utcnow() + timedelta(hours=1)
        requeued = await store.requeue_expired(later, max_recoveries=1)
        if (await store.get(e.execution_id)).status is Status.FAILED:
            break
        assert [w.execution_id for w in requeued] == [e.execution_id]
    lost = await store.get(e.execution_id)
    assert lost.status is Status.FAILED
    assert lost.error is not None and lost.error["type"] == "worker_lost"
    assert lost.attempt == 3 and lost.handbacks == 1


async def test_queued_before_pages_through_waiting_executions(store: Store) -> None:
    """queued_before lists QUEUED rows runnable for longer than the given time, in id
    order, page by page."""
    ids = []
    for _ in range(5):
        e = new()
        await store.create(e)
        ids.append(e.execution_id)
    await store.claim(ids[0], "w", 30)
    later = utcnow() + timedelta(seconds=60)
    first = await store.queued_before(30, now=later, limit=2)
    rest = await store.queued_before(30, now=later, after=first[-1].execution_id, limit=10)
    assert [w.execution_id for w in first + rest] == ids[1:]
    assert await store.queued_before(3600) == []


async def test_one_running_execution_per_thread(store: Store) -> None:
    """While an execution of a thread runs, no other execution of that thread is claimed,
    and the thread's executions run in submission order."""
    first, second, other = new("t"), new("t"), new("u")
    for e in (first, second, other):
        await store.create(e)
    assert await store.claim(second.execution_id, "w", 30) is None  # the older one goes first
    claimed = await store.claim(first.execution_id, "w", 30)
    assert claimed is not None
    assert await store.claim(second.execution_id, "w", 30) is None  # thread busy
    assert await store.claim(other.execution_id, "w", 30) is not None
    recorded = await store.finish(first.execution_id, 1, Outcome(Status.COMPLETED))
    assert recorded is not None  # the next one of the thread is read in passing
    assert recorded.next_on_thread == Waiting(second.execution_id, 0, None)
    assert await store.claim(second.execution_id, "w", 30) is not None
    done = await store.finish(second.execution_id, 1, Outcome(Status.COMPLETED))
    assert done is not None and done.next_on_thread is None


async def test_count_by_status_covers_every_status(store: Store) -> None:
    """Counts name every status, zero included."""
    for _ in range(3):
        await store.create(new())
    counts = await store.count_by_status()
    assert set(counts) == set(Status)
    assert counts[Status.QUEUED] == 3
    assert sum(counts.values()) == 3
