"""The state machine of docs/architecture.md, in one table, and proof that every status
change the store makes is one of its named moves."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from lg_deploy.core.errors import InvalidTransition
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.models import Execution, utcnow
from lg_deploy.core.states import (
    MOVES,
    TERMINAL,
    TRANSITIONS,
    Move,
    Status,
    check_transition,
    sources_of,
)
from lg_deploy.core.store import Outcome, Store
from lg_deploy.core.store.sql import SQLStore
from lg_deploy.core.store.statements import MOVE_OPTION

ALLOWED = {
    (Status.QUEUED, Status.RUNNING),
    (Status.QUEUED, Status.CANCELLED),
    (Status.RUNNING, Status.COMPLETED),
    (Status.RUNNING, Status.FAILED),
    (Status.RUNNING, Status.CANCELLED),
    (Status.RUNNING, Status.INTERRUPTED),
    (Status.RUNNING, Status.QUEUED),
    (Status.INTERRUPTED, Status.QUEUED),
    (Status.INTERRUPTED, Status.CANCELLED),
}


@pytest.mark.parametrize("current", list(Status))
@pytest.mark.parametrize("wanted", list(Status))
def test_only_the_documented_moves_are_allowed(current: Status, wanted: Status) -> None:
    """check_transition accepts exactly the moves of the documented state machine."""
    if (current, wanted) in ALLOWED:
        check_transition(current, wanted)
    else:
        with pytest.raises(InvalidTransition) as info:
            check_transition(current, wanted)
        assert (info.value.current, info.value.wanted) == (current, wanted)


def test_terminal_states_have_no_way_out() -> None:
    """COMPLETED, FAILED and CANCELLED are terminal: nothing leaves them."""
    assert {Status.COMPLETED, Status.FAILED, Status.CANCELLED} == TERMINAL
    assert all(not TRANSITIONS[s] for s in TERMINAL)


def test_each_move_names_its_own_sources() -> None:
    """A move starts only where it may: resume from INTERRUPTED alone, a retry or a
    recovery from RUNNING alone, although all three lead to QUEUED."""
    assert sources_of(Move.RESUME, Status.QUEUED) == {Status.INTERRUPTED}
    for move in (Move.RETRY, Move.HAND_BACK, Move.RECOVER):
        assert sources_of(move, Status.QUEUED) == {Status.RUNNING}
    assert sources_of(Move.CANCEL, Status.CANCELLED) == {
        Status.QUEUED,
        Status.RUNNING,
        Status.INTERRUPTED,
    }
    assert sources_of(Move.CLAIM, Status.RUNNING) == {Status.QUEUED}
    with pytest.raises(ValueError):
        sources_of(Move.RESUME, Status.COMPLETED)
    assert all(not (t.sources & TERMINAL) for t in MOVES.values())


def _new(thread_id: str | None = None) -> Execution:
    execution_id = new_execution_id()
    return Execution(
        execution_id=execution_id, graph_id="steps", thread_id=thread_id or str(execution_id)
    )


async def _every_move(store: Store) -> None:
    """Drive the store through each kind of status change it knows."""
    paused = _new()
    await store.create(paused)
    claimed = await store.claim(paused.execution_id, "w", 60)
    assert claimed is not None
    assert await store.renew_leases({paused.execution_id: claimed.attempt}, 60)
    interrupted = Outcome(Status.INTERRUPTED, interrupts=[{"id": "i", "value": "?"}])
    assert await store.finish(paused.execution_id, claimed.attempt, interrupted)
    await store.resume(paused.execution_id, "yes")
    again = await store.claim(paused.execution_id, "w", 60)
    assert again is not None
    assert await store.finish(paused.execution_id, again.attempt, Outcome(Status.COMPLETED))

    retried = _new()
    await store.create(retried)
    first = await store.claim(retried.execution_id, "w", 60)
    assert first is not None
    assert await store.retry(retried.execution_id, first.attempt, {"type": "E"}, 0)
    second = await store.claim(retried.execution_id, "w", 60)
    assert second is not None
    assert await store.release(retried.execution_id, second.attempt)
    await store.cancel(retried.execution_id)

    lost = _new()
    await store.create(lost)
    assert await store.claim(lost.execution_id, "dead", 60) is not None
    later = utcnow() + timedelta(hours=1)
    assert [w.execution_id for w in await store.requeue_expired(later)] == [lost.execution_id]
    assert await store.claim(lost.execution_id, "dead", 60) is not None
    assert await store.requeue_expired(later, max_recoveries=0) == []
    assert (await store.get(lost.execution_id)).status is Status.FAILED


async def test_every_status_change_in_the_store_is_a_named_move(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each UPDATE that sets a status carries the move it applies (its sources came from
    the table); a new status change written beside the table makes this test fail."""
    assert isinstance(store, SQLStore)
    seen: list[Move] = []
    bypassing: list[str] = []

    def record(conn: Any, clause: Any, *args: Any) -> None:
        if not isinstance(clause, sa.Update):
            return
        sql = str(clause.compile(dialect=conn.dialect))
        if not re.search(r"\bSET\b.*\bstatus=", sql, re.DOTALL):
            return
        move = clause.get_execution_options().get(MOVE_OPTION)
        if move is None:
            bypassing.append(sql)
        else:
            seen.append(Move(move))

    if (direct := store._direct) is not None:
        # PostgreSQL's per-execution statements skip SQLAlchemy's execution layer and its
        # events (core/store/direct.py): watch them where they run.
        run_directly = direct.fetch

        async def fetch(stmt: Any, params: Any) -> Any:
            record(store.engine, stmt)
            return await run_directly(stmt, params)

        monkeypatch.setattr(direct, "fetch", fetch)
    event.listen(store.engine.sync_engine, "before_execute", record)
    try:
        await _every_move(store)
    finally:
        event.remove(store.engine.sync_engine, "before_execute", record)
    assert bypassing == []
    assert set(seen) == set(Move)
