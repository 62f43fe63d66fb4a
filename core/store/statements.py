"""The SQL the store runs, built in one place: the moves of the state machine, the claim,
and the clock every lease is measured on.

Lease expiries, backoffs and the reconciler's "stale" are computed from the database's
clock on PostgreSQL (``clock_timestamp()``), so that a worker whose own clock is off can
neither take over leases early nor keep them late. SQLite serves one process on one
host: there, the process's clock is the database's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from lg_deploy.core.models import ExecutionTable, UTCDateTime, utcnow
from lg_deploy.core.states import TERMINAL, Move, Status, sources_of

T = ExecutionTable.__table__  # type: ignore[attr-defined]
C = T.c

# Every status change carries this execution option naming its move, so a test can prove
# that none bypasses the state machine (tests/test_states.py).
MOVE_OPTION = "lg_deploy_move"


def db_now(dialect: str) -> Any:
    """Now, by the database's clock (see the module docstring)."""
    if dialect == "postgresql":
        return sa.func.clock_timestamp(type_=UTCDateTime())
    return utcnow()


def db_later(dialect: str, seconds: float, now: Any = None) -> Any:
    """``seconds`` after ``now`` (default: now by the database's clock); negative for
    before."""
    now = db_now(dialect) if now is None else now
    if isinstance(now, sa.ColumnElement):
        return now + sa.literal(timedelta(seconds=seconds), sa.Interval())
    return now + timedelta(seconds=seconds)


class SecondsAfter(sa.sql.expression.FunctionElement[datetime]):
    """``now`` plus the column ``seconds`` (NULL when it is NULL), compiled for each
    dialect: on SQLite into the text form SQLAlchemy stores timestamps in (microseconds),
    so that the values compare with the ones it binds."""

    type = UTCDateTime()
    inherit_cache = True
    name = "seconds_after"


@compiles(SecondsAfter, "postgresql")
def _seconds_after_pg(element: SecondsAfter, compiler: Any, **kw: Any) -> str:
    now, seconds = (compiler.process(c, **kw) for c in element.clauses)
    return f"({now} + make_interval(secs => {seconds}))"


@compiles(SecondsAfter, "sqlite")
def _seconds_after_sqlite(element: SecondsAfter, compiler: Any, **kw: Any) -> str:
    now, seconds = (compiler.process(c, **kw) for c in element.clauses)
    shifted = f"strftime('%Y-%m-%d %H:%M:%f', {now}, printf('%+.6f seconds', {seconds}))"
    return f"(CASE WHEN {seconds} IS NULL THEN NULL ELSE {shifted} || '000' END)"


def seconds_after(now: Any, seconds: Any) -> Any:
    if not isinstance(now, sa.ColumnElement):
        now = sa.literal(now, UTCDateTime())
    return SecondsAfter(now, seconds)


def move(which: Move, wanted: Status, now: Any) -> sa.Update:
    """The UPDATE of one move of the state machine: only rows in one of the move's source
    statuses (``core/states.py``) change, so of two racing writers exactly one wins.
    Callers narrow it to the rows they mean.

    It also keeps ``delete_after`` (``core/retention.py``): a move that ends the execution
    stamps it from ``retention_s``, one that pauses it from ``interrupted_retention_s``,
    any other clears it, so that nothing the pruner may delete is ever runnable."""
    stmt = (
        T.update()
        .where(C.status.in_([status_is(s) for s in sources_of(which, wanted)]))
        .values(status=wanted.value, updated_at=now)
        .execution_options(**{MOVE_OPTION: which.value})
    )
    if wanted in TERMINAL:
        stmt = stmt.values(delete_after=seconds_after(now, C.retention_s))
    elif wanted is Status.INTERRUPTED:
        stmt = stmt.values(delete_after=seconds_after(now, C.interrupted_retention_s))
    else:
        stmt = stmt.values(delete_after=None)
    if wanted in TERMINAL:
        stmt = stmt.values(finished_at=now)
        if which is not Move.CANCEL:
            stmt = stmt.values(lease_owner=None, lease_expires_at=None)
        # A cancelled attempt keeps its lease until its worker lets go of it, once its graph
        # has stopped (``stopping``): until then, its thread runs nothing else, and the
        # pruner leaves it alone.
    if wanted is Status.QUEUED:
        stmt = stmt.values(lease_owner=None, lease_expires_at=None, queued_at=now)
    return stmt


def status_is(status: Status) -> Any:
    """The status as a literal in the SQL, not a parameter: a partial index (``WHERE
    status = 'QUEUED'``) is used only when the query names the value itself, by SQLite
    always, and by PostgreSQL in the generic plan of a prepared statement. With a
    parameter, after a few executions of a
    statement, a claim on a thread of 10k finished executions scanned all of them."""
    return sa.literal_column(f"'{status.value}'", C.status.type)


def stopping(table: Any = T) -> Any:
    """A cancelled execution whose graph may still be running: its worker has not let go
    of it yet (``Store.let_go``), nor has its lease run out and the reconciler let go."""
    return sa.and_(table.c.status == status_is(Status.CANCELLED), table.c.lease_owner.is_not(None))


@cache
def claim_statement(dialect: str) -> sa.Update:
    """QUEUED -> RUNNING for ``:claim_id`` (and ``:owner``, ``:lease_s``), unless an older
    execution of the same thread is still queued (a thread's executions run in submission
    order) or a cancelled one is still stopping (invariant 5 holds until its graph has
    stopped, not only until its row says CANCELLED). Built once per dialect: an alias is
    costly to make per call."""
    # Each is an index range of the claimed row's thread (ix_executions_queued_thread,
    # ix_executions_stopping_thread), looked up for that one row, whatever the planner
    # knows of the table: correlated with the row, and kept a subplan by OFFSET 0, which
    # stops PostgreSQL from turning NOT EXISTS into an anti-join. As a join, a planner
    # with no statistics yet (a new store, until autovacuum's first ANALYZE) scanned
    # every queued execution on each claim: under a backlog of 2,000, 1.5 ms and 6,000
    # buffers a claim in EXPLAIN ANALYZE of the generic plan, against 0.08 ms now.
    earlier = T.alias("earlier")
    older_queued_on_thread = (
        sa.select(earlier.c.execution_id)
        .where(earlier.c.thread_id == C.thread_id)
        .where(earlier.c.status == status_is(Status.QUEUED))
        .where(earlier.c.execution_id < C.execution_id)
    )
    stopping_on_thread = (
        sa.select(earlier.c.execution_id)
        .where(earlier.c.thread_id == C.thread_id)
        .where(stopping(earlier))
    )
    if dialect == "postgresql":
        fence: Any = sa.literal_column("0")
        older_queued_on_thread = older_queued_on_thread.offset(fence)
        stopping_on_thread = stopping_on_thread.offset(fence)
        now: Any = db_now(dialect)
        expires: Any = now + sa.func.make_interval(
            0, 0, 0, 0, 0, 0, sa.bindparam("lease_s", type_=sa.Float())
        )
    else:
        now = sa.bindparam("now", type_=UTCDateTime())
        expires = sa.bindparam("expires", type_=UTCDateTime())
    return (
        move(Move.CLAIM, Status.RUNNING, now)
        .where(C.execution_id == sa.bindparam("claim_id", type_=sa.Uuid()))
        .where(sa.or_(C.not_before.is_(None), C.not_before <= now))
        .where(~sa.exists(older_queued_on_thread))
        .where(~sa.exists(stopping_on_thread))
        .values(
            attempt=C.attempt + 1,
            lease_owner=sa.bindparam("owner", type_=sa.String()),
            lease_expires_at=expires,
            started_at=sa.func.coalesce(C.started_at, now),
        )
        .returning(*T.c)
    )


def claim_params(dialect: str, execution_id: Any, owner: str, lease_s: float) -> dict[str, Any]:
    if dialect == "postgresql":
        return {"claim_id": execution_id, "owner": owner, "lease_s": lease_s}
    now = utcnow()
    return {
        "claim_id": execution_id,
        "owner": owner,
        "now": now,
        "expires": now + timedelta(seconds=lease_s),
    }


@cache
def next_on_thread() -> tuple[Any, ...]:
    """Columns for the RETURNING clause of a statement on one execution: the id, attempt
    and not-before time of the oldest QUEUED execution of its thread (NULL when none), so
    that finishing an execution and finding the next of its thread is one round trip."""
    waiting = T.alias("waiting")

    def pick(column: Any) -> Any:
        return (
            sa.select(column)
            .where(waiting.c.thread_id == C.thread_id)
            .where(waiting.c.status == status_is(Status.QUEUED))
            .order_by(waiting.c.execution_id)
            .limit(1)
            .scalar_subquery()
        )

    return (pick(waiting.c.execution_id), pick(waiting.c.attempt), pick(waiting.c.not_before))


@cache
def insert_statement(dialect: str) -> sa.Insert:
    """The INSERT of a new execution, its values given as parameters; it is runnable from
    now by the database's clock, as every later ``queued_at``. Built once per dialect.

    On PostgreSQL the statement takes a shared advisory lock on its thread, held until it
    commits: the pruner deletes a thread's checkpoints under the exclusive lock, after it
    saw no execution left on the thread, so it can never delete them under a submission
    it does not see yet (``core/store/pruning.py``)."""
    if dialect != "postgresql":
        return T.insert()
    columns = [c for c in T.c if c.name != "queued_at"]
    lock = sa.select(
        sa.func.pg_advisory_xact_lock_shared(
            sa.func.hashtext(sa.bindparam("thread_id", type_=sa.String()))
        ).label("thread_lock")
    ).subquery("thread_lock")
    values = sa.select(
        *(sa.bindparam(c.name, type_=c.type) for c in columns), db_now(dialect)
    ).select_from(lock)
    return T.insert().from_select([*(c.name for c in columns), "queued_at"], values)


_RESULT_COLUMNS = ("output", "error", "error_traceback", "interrupts")


@cache
def finish_statement(dialect: str, status: Status) -> sa.Update:
    """The move that records an attempt's result, fenced on ``:the_execution`` and
    ``:the_attempt``, the result given as parameters (and ``:attempt_errors`` for a failure);
    it returns the next execution of the thread (``next_on_thread``). Built once per
    dialect and status."""
    stmt = (
        move(Move.FINISH, status, db_now(dialect) if dialect == "postgresql" else _NOW)
        .where(C.execution_id == sa.bindparam("the_execution", type_=C.execution_id.type))
        .where(C.attempt == sa.bindparam("the_attempt", type_=C.attempt.type))
        .values(
            {name: sa.bindparam(name, type_=C[name].type) for name in _RESULT_COLUMNS}
            | {"resume": None, "has_resume": False}
        )
        .returning(C.execution_id, *next_on_thread())
    )
    if status is Status.INTERRUPTED:
        stmt = stmt.values(lease_owner=None, lease_expires_at=None)
    if status is Status.FAILED:
        stmt = stmt.values(
            attempt_errors=sa.bindparam("attempt_errors", type_=C.attempt_errors.type)
        )
    return stmt


# The time of a statement built once, on SQLite: given with its parameters.
_NOW = sa.bindparam("now", type_=UTCDateTime())
