"""The SQL of the prune pass (``core/store/pruning.py``): which executions are due, which
threads are busy, in the indexes meant for them on both databases."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import Alias

from lg_deploy.core.models import Thread
from lg_deploy.core.states import TERMINAL, Status
from lg_deploy.core.store.statements import T, status_is
from lg_deploy.core.store.statements import stopping as is_stopping

DELETABLE = [s.value for s in (*TERMINAL, Status.INTERRUPTED)]
# LangGraph's DeltaChannel rebuilds a value from older checkpoints: such threads keep
# their history (the saver's own prune refuses them for the same reason).
DELTA_KEYS = ("counters_since_delta_snapshot", "delta_writes_versioned")
PLATFORM_THREADS = Thread.__table__  # type: ignore[attr-defined]


CHECKPOINTS = sa.table(
    "checkpoints",
    sa.column("thread_id", sa.String()),
    sa.column("checkpoint_ns", sa.String()),
    sa.column("checkpoint_id", sa.String()),
)


class IndexedAlias(Alias):
    """An alias of the executions that SQLite reads by one index (``INDEXED BY``); other
    databases choose for themselves. Without statistics (nobody runs ANALYZE on an
    embedded database) SQLite reads the status index instead, which means every
    CANCELLED row for every candidate: quadratic in the table's size."""

    inherit_cache = True
    index: str = ""

    @classmethod
    def of(cls, name: str, index: str) -> IndexedAlias:
        alias = cls._construct(T, name=name)
        alias.index = index
        return alias


@compiles(IndexedAlias, "sqlite")
def _indexed_alias_sqlite(element: IndexedAlias, compiler: Any, **kw: Any) -> str:
    text: str = compiler.visit_alias(element, **kw)
    return f"{text} INDEXED BY {element.index}" if kw.get("asfrom") else text


def busy_thread(thread: Any) -> Any:
    """The thread has an execution queued, running, or cancelled but still held: three
    lookups, each in a partial index."""
    queued = IndexedAlias.of("busy_queued", "ix_executions_queued_thread")
    running = IndexedAlias.of("busy_running", "ux_executions_running_thread")
    stopping = IndexedAlias.of("busy_stopping", "ix_executions_stopping_thread")
    return sa.or_(
        sa.exists()
        .where(queued.c.thread_id == thread)
        .where(queued.c.status == status_is(Status.QUEUED)),
        sa.exists()
        .where(running.c.thread_id == thread)
        .where(running.c.status == status_is(Status.RUNNING)),
        sa.exists().where(stopping.c.thread_id == thread).where(is_stopping(stopping)),
    )


def due(table: Any, now: Any) -> Any:
    """The conditions on a row of ``table`` (the executions, or an alias) the pass may
    delete, checked again by the DELETE itself: a concurrent resume (which clears
    ``delete_after``) or a submission on its thread wins."""
    c = table.c
    return sa.and_(
        c.delete_after.is_not(None),
        c.delete_after <= now,
        c.status.in_(DELETABLE),
        c.lease_owner.is_(None),
        ~busy_thread(c.thread_id),
    )


def oldest_due(now: Any, limit: int) -> sa.Select[Any]:
    """The ids of the ``limit`` due executions whose ``delete_after`` passed first, read in
    the partial index of ``delete_after``."""
    pick = IndexedAlias.of("pick", "ix_executions_delete_after")
    return (
        sa.select(pick.c.execution_id, pick.c.delete_after)
        .where(due(pick, now))
        .order_by(pick.c.delete_after)
        .limit(limit)
    )


def threads_in() -> sa.BindParameter[Any]:
    return sa.bindparam("threads", expanding=True)


def not_platform(thread: Any) -> Any:
    return ~sa.exists().where(PLATFORM_THREADS.c.thread_id == thread)
