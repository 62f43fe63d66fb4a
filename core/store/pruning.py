"""The prune pass: deletes executions whose ``delete_after`` has passed, the checkpoints of
the threads they leave empty, and (``keep_checkpoints``) the old checkpoints of live
threads. docs/operations.md, "Retention", says what is deleted when.

What it never deletes:

- an execution that is QUEUED or RUNNING (they have no ``delete_after``: every move into
  them clears it), nor any row of a thread that has one, nor of a thread whose cancelled
  execution is still held by its worker (``lease_owner`` set until its graph stops);
- the checkpoints of a thread some execution still names, nor those of a LangGraph
  Platform thread (the ``threads`` table: its state is read after its runs are gone);
- the newest ``keep_checkpoints`` checkpoints of each namespace of a live thread. An
  execution resumes from its thread's newest checkpoint (``worker/resume.py``), and a run
  that names an older one is QUEUED, so its thread is skipped.

Each batch is one short transaction of bounded statements (``batch_size`` rows). A
submission to a thread holds a shared advisory lock on it until it commits
(``statements.insert_statement``); the pass deletes a thread's checkpoints only under the
exclusive one, taken without waiting, and only once it has seen no execution left on the
thread: a submission it cannot see yet makes it skip the thread, never delete under it.
On SQLite the pass writes first, so the database's one writer lock orders it with every
submission.

One pass runs at a time: on PostgreSQL under a session advisory lock (another worker's
pass makes this one return at once), on SQLite under a lock of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lg_deploy.core.models import UTCDateTime
from lg_deploy.core.store.prune_statements import (
    CHECKPOINTS,
    DELTA_KEYS,
    PLATFORM_THREADS,
    IndexedAlias,
    busy_thread,
    due,
    not_platform,
    oldest_due,
    threads_in,
)
from lg_deploy.core.store.statements import C, T, db_now

# The key of the session lock one pass at a time holds ("lg-prune").
PRUNE_LOCK_KEY = 0x6C67_2D70_7275_6E65


@dataclass
class PruneReport:
    """What a pass deleted (or, dry, would delete)."""

    executions: int = 0
    threads: int = 0  # threads whose checkpoints all went with their last execution
    checkpoints: int = 0  # checkpoint rows (their writes and blobs go with them)
    skipped_threads: int = 0  # a submission held the thread: left for a later pass
    ran: bool = True  # False: another pass held the lock
    dry_run: bool = False


class Pruner:
    """Prune passes over one database (the store's engine)."""

    def __init__(self, engine: AsyncEngine, *, batch_size: int = 500) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.batch_size = batch_size
        self._local = asyncio.Lock()
        self.postgres = self.dialect == "postgresql"
        self.checkpoint_tables = (
            ("checkpoints", "checkpoint_writes", "checkpoint_blobs")
            if self.postgres
            else ("checkpoints", "writes")
        )

    async def prune(
        self,
        *,
        now: datetime | None = None,
        keep_checkpoints: int = 0,
        dry_run: bool = False,
        max_batches: int | None = None,
    ) -> PruneReport:
        """One pass; ``now`` (default: the database's clock) decides what is due."""
        if self._local.locked():
            return PruneReport(ran=False, dry_run=dry_run)
        async with self._local, self.engine.connect() as conn:
            if self.postgres and not await self._take_turn(conn):
                return PruneReport(ran=False, dry_run=dry_run)
            try:
                at: Any = (
                    sa.literal(now, UTCDateTime()) if now is not None else db_now(self.dialect)
                )
                if dry_run:
                    return await self._preview(conn, at, keep_checkpoints)
                report = PruneReport()
                batches = 0
                while max_batches is None or batches < max_batches:
                    batches += 1
                    if await self._batch(conn, at, report) < self.batch_size:
                        break
                if keep_checkpoints > 0:
                    await self._trim_live_threads(conn, keep_checkpoints, report)
                return report
            finally:
                # After a lost connection the server has let go of the lock already, and
                # the error that ended the pass is the one to raise.
                with contextlib.suppress(sa.exc.DBAPIError, OSError):
                    if conn.in_transaction():
                        await conn.rollback()
                    if self.postgres:
                        unlock = sa.select(sa.func.pg_advisory_unlock(PRUNE_LOCK_KEY))
                        await conn.execute(unlock)
                        await conn.commit()

    async def _take_turn(self, conn: AsyncConnection) -> bool:
        taken = (
            await conn.execute(sa.select(sa.func.pg_try_advisory_lock(PRUNE_LOCK_KEY)))
        ).scalar()
        await conn.commit()
        return bool(taken)

    async def _batch(self, conn: AsyncConnection, now: Any, report: PruneReport) -> int:
        """Delete up to ``batch_size`` due executions, and the checkpoints of the threads
        they leave empty, in one transaction; returns how many executions went."""
        picked = oldest_due(now, self.batch_size).subquery("picked")
        async with conn.begin():
            deleted = (
                await conn.execute(
                    T.delete()
                    .where(C.execution_id.in_(sa.select(picked.c.execution_id)))
                    .where(due(T, now))
                    .returning(C.thread_id)
                )
            ).all()
            threads = sorted({row[0] for row in deleted})
            if threads:
                empty = await self._empty_threads(conn, threads, report)
                report.checkpoints += await self._delete_threads(conn, empty)
                report.threads += len(empty)
            report.executions += len(deleted)
        return len(deleted)

    async def _lock_threads(self, conn: AsyncConnection, threads: Sequence[str]) -> list[str]:
        """Those of ``threads`` whose exclusive lock this transaction got (PostgreSQL), held
        until it ends; the others have a submission in flight."""
        if not self.postgres or not threads:
            return list(threads)
        lock = sa.text(
            "SELECT t FROM unnest(CAST(:threads AS text[])) AS t "
            "WHERE pg_try_advisory_xact_lock(hashtext(t))"
        )
        return [row[0] for row in await conn.execute(lock, {"threads": list(threads)})]

    async def _empty_threads(
        self, conn: AsyncConnection, threads: Sequence[str], report: PruneReport
    ) -> list[str]:
        """Those of ``threads`` no execution names any more, that are not platform threads,
        locked (this statement runs after the lock, so it sees every committed submission)."""
        locked = await self._lock_threads(conn, threads)
        report.skipped_threads += len(threads) - len(locked)
        if not locked:
            return []
        still_named = sa.select(C.thread_id).where(C.thread_id.in_(threads_in()))
        platform = sa.select(PLATFORM_THREADS.c.thread_id).where(
            PLATFORM_THREADS.c.thread_id.in_(threads_in())
        )
        kept = {row[0] for row in await conn.execute(still_named, {"threads": locked})}
        kept |= {row[0] for row in await conn.execute(platform, {"threads": locked})}
        return [t for t in locked if t not in kept]

    async def _delete_threads(self, conn: AsyncConnection, threads: Sequence[str]) -> int:
        """Every checkpoint, write and blob of ``threads``; returns the checkpoints."""
        if not threads:
            return 0
        counted = 0
        for table in self.checkpoint_tables:
            result = await conn.execute(
                sa.text(f"DELETE FROM {table} WHERE thread_id IN :threads").bindparams(
                    threads_in()
                ),
                {"threads": list(threads)},
            )
            if table == "checkpoints":
                counted = result.rowcount
        return counted

    async def _trim_live_threads(
        self, conn: AsyncConnection, keep: int, report: PruneReport
    ) -> None:
        """Delete all but the newest ``keep`` checkpoints of each namespace of each live
        thread that has more, a batch of threads at a time, each in a short transaction."""
        after = ""
        while True:
            long_threads = (
                await conn.execute(
                    sa.text(
                        "SELECT thread_id, checkpoint_ns FROM checkpoints WHERE thread_id > :after "
                        "GROUP BY thread_id, checkpoint_ns HAVING count(*) > :keep "
                        "ORDER BY thread_id, checkpoint_ns LIMIT :n"
                    ),
                    {"after": after, "keep": keep, "n": self.batch_size},
                )
            ).all()
            await conn.commit()
            for thread_id, namespace in long_threads:
                async with conn.begin():
                    if await self._trimmable(conn, thread_id):
                        report.checkpoints += await self._trim(conn, thread_id, namespace, keep)
                    else:
                        report.skipped_threads += 1
            if len(long_threads) < self.batch_size:
                return
            after = long_threads[-1][0]

    async def _trimmable(self, conn: AsyncConnection, thread_id: str) -> bool:
        """Locked, idle (nothing queued, running or stopping), not a platform thread, and
        without a DeltaChannel."""
        if not await self._lock_threads(conn, [thread_id]):
            return False
        busy = sa.select(busy_thread(sa.literal(thread_id)))
        platform = sa.select(PLATFORM_THREADS.c.thread_id).where(
            PLATFORM_THREADS.c.thread_id == thread_id
        )
        if (await conn.execute(busy)).scalar() or (await conn.execute(platform)).first():
            return False
        if self.postgres:
            delta = " OR ".join(f"metadata ? '{key}'" for key in DELTA_KEYS)
        else:
            delta = " OR ".join(
                f"json_extract(CAST(metadata AS TEXT), '$.{key}') IS NOT NULL" for key in DELTA_KEYS
            )
        uses_delta = sa.text(
            f"SELECT 1 FROM checkpoints WHERE thread_id = :t AND ({delta}) LIMIT 1"
        )
        return (await conn.execute(uses_delta, {"t": thread_id})).first() is None

    async def _trim(self, conn: AsyncConnection, thread_id: str, namespace: str, keep: int) -> int:
        """Checkpoints of one namespace older than its newest ``keep``, with their writes,
        and the blobs only they referenced (PostgreSQL); returns the checkpoints."""
        key = {"t": thread_id, "ns": namespace}
        oldest_kept = (
            await conn.execute(
                sa.text(
                    "SELECT checkpoint_id FROM checkpoints WHERE thread_id = :t "
                    "AND checkpoint_ns = :ns ORDER BY checkpoint_id DESC LIMIT 1 OFFSET :skip"
                ),
                key | {"skip": keep - 1},
            )
        ).scalar()
        if oldest_kept is None:
            return 0
        key["cut"] = oldest_kept
        writes = self.checkpoint_tables[1]
        await conn.execute(
            sa.text(
                f"DELETE FROM {writes} WHERE thread_id = :t AND checkpoint_ns = :ns "
                "AND checkpoint_id < :cut"
            ),
            key,
        )
        if not self.postgres:
            result = await conn.execute(
                sa.text(
                    "DELETE FROM checkpoints WHERE thread_id = :t AND checkpoint_ns = :ns "
                    "AND checkpoint_id < :cut"
                ),
                key,
            )
            return int(result.rowcount)
        # A blob goes when a deleted checkpoint referenced it and no kept one does. Blobs a
        # checkpoint being written meanwhile references have newer versions: never these.
        trimmed = await conn.execute(
            sa.text(
                "WITH gone AS (DELETE FROM checkpoints WHERE thread_id = :t "
                "AND checkpoint_ns = :ns AND checkpoint_id < :cut "
                "RETURNING checkpoint -> 'channel_versions' AS versions), "
                "old AS (SELECT DISTINCT v.key AS channel, v.value AS version "
                "FROM gone, jsonb_each_text(gone.versions) AS v), "
                "blobs AS (DELETE FROM checkpoint_blobs b USING old "
                "WHERE b.thread_id = :t AND b.checkpoint_ns = :ns "
                "AND b.channel = old.channel AND b.version = old.version "
                "AND NOT EXISTS (SELECT 1 FROM checkpoints k WHERE k.thread_id = :t "
                "AND k.checkpoint_ns = :ns AND k.checkpoint_id >= :cut "
                "AND k.checkpoint -> 'channel_versions' ->> b.channel = b.version)) "
                "SELECT count(*) FROM gone"
            ),
            key,
        )
        return int(trimmed.scalar() or 0)

    async def _preview(self, conn: AsyncConnection, now: Any, keep: int) -> PruneReport:
        """What a pass would delete now, counted, nothing deleted."""
        pick = IndexedAlias.of("pick", "ix_executions_delete_after")
        candidates = sa.select(pick.c.execution_id, pick.c.thread_id).where(due(pick, now))
        candidates_cte = candidates.cte("candidates")
        # A thread is emptied when every execution it has is a candidate: counted, not
        # matched row by row (a NOT IN over the candidates went quadratic on SQLite).
        on_thread = T.alias("on_thread")
        all_of_thread = (
            sa.select(sa.func.count())
            .where(on_thread.c.thread_id == candidates_cte.c.thread_id)
            .scalar_subquery()
        )
        emptied = (
            sa.select(candidates_cte.c.thread_id)
            .where(not_platform(candidates_cte.c.thread_id))
            .group_by(candidates_cte.c.thread_id)
            .having(sa.func.count() == all_of_thread)
            .cte("emptied")
        )
        count = sa.func.count()
        # One statement: the candidates and the emptied threads are worked out once.
        executions, threads, checkpoints = (
            await conn.execute(
                sa.select(
                    sa.select(count).select_from(candidates_cte).scalar_subquery(),
                    sa.select(count).select_from(emptied).scalar_subquery(),
                    sa.select(count)
                    .where(CHECKPOINTS.c.thread_id.in_(sa.select(emptied.c.thread_id)))
                    .scalar_subquery(),
                )
            )
        ).one()
        report = PruneReport(
            executions=executions or 0,
            threads=threads or 0,
            checkpoints=checkpoints or 0,
            dry_run=True,
        )
        if keep > 0:
            per_namespace = (
                sa.select(CHECKPOINTS.c.thread_id, sa.func.count().label("n"))
                .where(not_platform(CHECKPOINTS.c.thread_id))
                .where(~busy_thread(CHECKPOINTS.c.thread_id))
                .group_by(CHECKPOINTS.c.thread_id, CHECKPOINTS.c.checkpoint_ns)
                .having(sa.func.count() > keep)
                .subquery()
            )
            excess = sa.select(sa.func.coalesce(sa.func.sum(per_namespace.c.n - keep), 0))
            report.checkpoints += int((await conn.execute(excess)).scalar() or 0)
        await conn.rollback()
        return report

    async def overdue_s(self, now: datetime | None = None) -> float:
        """How long the oldest execution the pass may delete has waited past its
        ``delete_after`` (0 when none is due): whether pruning keeps up."""
        at: Any = db_now(self.dialect) if now is None else now
        if not isinstance(at, sa.ColumnElement):
            at = sa.literal(at, UTCDateTime())
        oldest = oldest_due(at, 1).subquery("oldest")
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(sa.select(oldest.c.delete_after).scalar_subquery(), at)
                )
            ).first()
        if row is None or row[0] is None:
            return 0.0
        return max((row[1] - row[0]).total_seconds(), 0.0)
