"""One SQL store for PostgreSQL (asyncpg) and SQLite (aiosqlite), through SQLAlchemy.

Every state change is a single conditional UPDATE whose WHERE clause names the statuses
the state machine allows as sources, so two writers can never both win; worker writes
are also fenced on the attempt they claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql.expression import UpdateBase

from lg_deploy.core.database_errors import first_line, translated
from lg_deploy.core.errors import (
    BackendBusy,
    ExecutionActive,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    ThreadBusy,
)
from lg_deploy.core.models import Execution, utcnow
from lg_deploy.core.states import ACTIVE, TERMINAL, Move, Status
from lg_deploy.core.store.base import Outcome, Overview, Page, Recorded, Waiting
from lg_deploy.core.store.direct import DirectStatements
from lg_deploy.core.store.platform_sql import PlatformQueries
from lg_deploy.core.store.pruning import Pruner, PruneReport
from lg_deploy.core.store.statements import (
    C,
    T,
    claim_params,
    claim_statement,
    db_later,
    db_now,
    finish_statement,
    insert_statement,
    move,
    next_on_thread,
    stopping,
)

_WAITING = (C.execution_id, C.attempt, C.not_before)

R = TypeVar("R")


_DRIVER_ERRORS = (sa.exc.SQLAlchemyError, OSError, ConnectionError)


def _failure(exc: Exception) -> Exception:
    """What the store raises for ``exc``: connection-level failures become
    ``BackendUnavailable`` (``BackendBusy`` when the pool has no connection free in time,
    ``BackendRefused`` for a wrong role or database); a statement's own errors, such as
    ``IntegrityError``, stay themselves."""
    if isinstance(exc, sa.exc.IntegrityError):
        return exc
    if isinstance(exc, sa.exc.TimeoutError):
        # No pooled connection came free in time: the database answers, this process is
        # overloaded (too many requests at once).
        return BackendBusy("database", first_line(exc))
    if isinstance(exc, sa.exc.DBAPIError | OSError | ConnectionError):
        return translated(exc) or exc
    return exc


def _row_to_execution(row: sa.Row[Any]) -> Execution:
    return _execution_of(row._mapping)


def _execution_of(columns: Mapping[Any, Any]) -> Execution:
    values = dict(columns)
    values["meta"] = values.pop("metadata")
    return Execution.model_validate(values)


def _values(execution: Execution) -> dict[str, Any]:
    values = execution.model_dump()
    values["metadata"] = values.pop("meta")
    return values


def _pool_size(engine: AsyncEngine) -> int:
    size = getattr(engine.pool, "size", None)
    return size() if callable(size) else 0


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; busy_timeout makes writers wait, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class SQLStore(PlatformQueries):
    """The store over an ``AsyncEngine``; it disposes of the engine it created itself. The
    LangGraph Platform API's queries come from ``PlatformQueries``."""

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        # One statement, one round trip: no BEGIN and COMMIT around a statement that is
        # atomic by itself (every move is one conditional UPDATE). Same pool.
        self._autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.dialect = engine.dialect.name
        self._owns_engine = owns_engine
        # SQLite (one process) serializes "insert unless the thread is busy" with this lock;
        # PostgreSQL with a transaction-scoped advisory lock on the thread.
        self._thread_lock = asyncio.Lock()
        self._pruner = Pruner(engine)
        # The statements every execution runs, without SQLAlchemy's execution layer
        # (core/store/direct.py); through it on SQLite.
        self._direct = None
        if engine.dialect.driver == "asyncpg":
            # The other statements keep at least half of the pool.
            self._direct = DirectStatements(engine, lanes=min(2, _pool_size(engine) // 2))

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> SQLStore:
        if url.startswith("sqlite"):
            engine = create_async_engine(url, **engine_kwargs)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            # A server that stops answering must become a 503, not a request that hangs:
            # seconds to connect, and to run one statement.
            engine_kwargs.setdefault("connect_args", {"timeout": 5, "command_timeout": 10})
            # No ping before each use (it cost three round trips): a connection the server
            # closed (a restart) fails its statement, which is tried once more on a new one.
            engine_kwargs.setdefault("pool_pre_ping", False)
            engine_kwargs.setdefault("pool_size", 10)
            engine_kwargs.setdefault("max_overflow", 0)
            engine_kwargs.setdefault("pool_timeout", 10)
            engine = create_async_engine(url, **engine_kwargs)
        return cls(engine, owns_engine=True)

    async def close(self) -> None:
        if self._direct is not None:
            await self._direct.close()
        if self._owns_engine:
            await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction, for the few operations of several statements."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except _DRIVER_ERRORS as exc:
            if (failure := _failure(exc)) is exc:
                raise
            raise failure from exc

    async def _run(self, stmt: sa.Executable, params: Mapping[str, Any] | None = None) -> Any:
        """One statement in autocommit mode, its rows read."""

        async def run() -> Any:
            async with self._autocommit.connect() as conn:
                return await conn.execute(stmt, params)

        return await self._twice(run)

    async def _rows(
        self, stmt: UpdateBase, params: Mapping[str, Any]
    ) -> Sequence[Mapping[Any, Any]]:
        """The rows of one of the statements every execution runs, by column name: on
        PostgreSQL straight on asyncpg (core/store/direct.py), in autocommit as ``_run``."""
        if (direct := self._direct) is None:
            result = await self._run(stmt, params)
            return result.mappings().all() if result.returns_rows else []
        return await self._twice(lambda: direct.fetch(stmt, params))

    async def _twice(self, run: Callable[[], Awaitable[R]]) -> R:
        """``run()``; when it found that the server had closed its pooled connection, once
        more on a new one. Driver errors become the store's (``_failure``)."""
        for last_try in (False, True):
            try:
                return await run()
            except _DRIVER_ERRORS as exc:
                stale = isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated
                if stale and not last_try:
                    continue
                if (failure := _failure(exc)) is exc:
                    raise
                raise failure from exc
        raise AssertionError("unreachable")

    async def ping(self) -> None:
        await self._run(sa.text("SELECT 1"))

    async def create(
        self, execution: Execution, *, reject_if_thread_busy: bool = False
    ) -> tuple[Execution, bool]:
        try:
            if reject_if_thread_busy:
                earlier = await self._insert_unless_thread_busy(execution)
                if earlier is not None:
                    return self._replay(earlier, execution), False
            else:
                await self._insert(None, execution)
            return execution, True
        except sa.exc.IntegrityError:
            if execution.idempotency_key is None:
                raise
        existing = await self._get_by_key(execution.idempotency_key)
        if existing is None:  # the other row vanished: nothing is left to conflict with
            return await self.create(execution, reject_if_thread_busy=reject_if_thread_busy)
        return self._replay(existing, execution), False

    async def _insert(self, conn: AsyncConnection | None, execution: Execution) -> None:
        stmt = insert_statement(self.dialect)
        values = _values(execution)
        if self.dialect == "postgresql":
            del values["queued_at"]  # the statement takes the database's clock
        else:
            values["queued_at"] = utcnow()
        if conn is None:
            await self._rows(stmt, values)
        else:
            await conn.execute(stmt, values)

    @staticmethod
    def _replay(existing: Execution, request: Execution) -> Execution:
        """The execution an idempotent retry gets back, or ``IdempotencyConflict``."""
        if existing.request_hash != request.request_hash:
            raise IdempotencyConflict(str(request.idempotency_key))
        return existing

    async def _insert_unless_thread_busy(self, execution: Execution) -> Execution | None:
        """Insert, or raise ``ThreadBusy``; under the thread's lock, an execution already
        made with the same idempotency key comes first and is returned instead: the thread
        is busy with that very execution, and a retry must get it back."""
        busy = (
            sa.select(C.execution_id)
            .where(C.thread_id == execution.thread_id)
            .where(C.status.in_([s.value for s in ACTIVE]))
            .limit(1)
        )
        async with self._thread_lock, self._begin() as conn:
            if self.dialect == "postgresql":
                # Held until commit: a concurrent request on the thread waits here, then
                # sees this transaction's row (each statement reads what is committed).
                await conn.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(execution.thread_id)))
                )
            if execution.idempotency_key is not None:
                same_key = T.select().where(C.idempotency_key == execution.idempotency_key)
                if (row := (await conn.execute(same_key)).first()) is not None:
                    return _row_to_execution(row)
            if (await conn.execute(busy)).first() is not None:
                raise ThreadBusy(execution.thread_id)
            await self._insert(conn, execution)
        return None

    async def _get_by_key(self, key: str) -> Execution | None:
        row = (await self._run(T.select().where(C.idempotency_key == key))).first()
        return None if row is None else _row_to_execution(row)

    async def get(self, execution_id: uuid.UUID) -> Execution:
        row = (await self._run(T.select().where(C.execution_id == execution_id))).first()
        if row is None:
            raise NotFound("execution", str(execution_id))
        return _row_to_execution(row)

    async def list_executions(
        self,
        *,
        status: Status | None = None,
        graph_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 50,
        cursor: uuid.UUID | None = None,
    ) -> Page:
        query = T.select().order_by(C.execution_id.desc()).limit(limit + 1)
        if status is not None:
            query = query.where(C.status == status.value)
        if graph_id is not None:
            query = query.where(C.graph_id == graph_id)
        if thread_id is not None:
            query = query.where(C.thread_id == thread_id)
        if cursor is not None:
            query = query.where(C.execution_id < cursor)
        rows = (await self._run(query)).all()
        items = [_row_to_execution(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items=items, next_cursor=str(items[-1].execution_id) if more else None)

    async def _apply(
        self,
        which: Move,
        execution_id: uuid.UUID,
        wanted: Status,
        values: Mapping[str, Any],
        *,
        attempt: int | None = None,
    ) -> Execution | None:
        """Apply the move ``which`` to one execution in one conditional UPDATE; None when
        it did not apply (the execution was not in a source status, or ``attempt`` moved
        on)."""
        stmt = (
            move(which, wanted, db_now(self.dialect))
            .where(C.execution_id == execution_id)
            .values(**values)
            .returning(*T.c)
        )
        if attempt is not None:
            stmt = stmt.where(C.attempt == attempt)
        row = (await self._run(stmt)).first()
        return None if row is None else _row_to_execution(row)

    async def _explain_refusal(self, execution_id: uuid.UUID, wanted: Status) -> InvalidTransition:
        current = await self.get(execution_id)  # raises NotFound
        return InvalidTransition(current.status, wanted)

    async def claim(self, execution_id: uuid.UUID, owner: str, lease_s: float) -> Execution | None:
        stmt = claim_statement(self.dialect)
        try:
            params = claim_params(self.dialect, execution_id, owner, lease_s)
            rows = await self._rows(stmt, params)
        except sa.exc.IntegrityError:
            return None  # another execution of this thread runs (architecture.md, invariant 5)
        return _execution_of(rows[0]) if rows else None

    async def renew_leases(self, leases: Mapping[uuid.UUID, int], lease_s: float) -> set[uuid.UUID]:
        if not leases:
            return set()
        stmt = (
            T.update()
            .where(sa.tuple_(C.execution_id, C.attempt).in_(list(leases.items())))
            .where(C.status == Status.RUNNING.value)
            .values(lease_expires_at=db_later(self.dialect, lease_s))
            .returning(C.execution_id)
        )
        return {row[0] for row in await self._run(stmt)}

    async def _with_attempt_error(
        self, execution_id: uuid.UUID, attempt: int, error: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """``attempt_errors`` plus this attempt's error. Read, then written by an UPDATE
        fenced on the same attempt: nobody else writes the row in between and wins."""
        query = sa.select(C.attempt_errors).where(C.execution_id == execution_id)
        current = (await self._run(query)).scalar()
        entry = {"attempt": attempt, **error, "at": utcnow().isoformat()}
        return [*(current or []), entry]

    async def finish(
        self, execution_id: uuid.UUID, attempt: int, outcome: Outcome
    ) -> Recorded | None:
        params: dict[str, Any] = {
            "the_execution": execution_id,
            "the_attempt": attempt,
            "output": outcome.output,
            "error": outcome.error,
            "error_traceback": outcome.traceback,
            "interrupts": outcome.interrupts,
        }
        if outcome.status is Status.FAILED:
            params["attempt_errors"] = await self._with_attempt_error(
                execution_id, attempt, outcome.error or {"type": "unknown", "message": ""}
            )
        if self.dialect != "postgresql":
            params["now"] = utcnow()
        rows = await self._rows(finish_statement(self.dialect, outcome.status), params)
        if not rows:
            return None
        _, *waiting = rows[0].values()
        return Recorded(Waiting(*waiting) if waiting[0] is not None else None)

    async def retry(
        self, execution_id: uuid.UUID, attempt: int, error: dict[str, Any], delay_s: float
    ) -> bool:
        runnable_at = db_later(self.dialect, delay_s)
        values = {
            "error": error,
            "attempt_errors": await self._with_attempt_error(execution_id, attempt, error),
            "not_before": runnable_at,
            "queued_at": runnable_at,
        }
        row = await self._apply(Move.RETRY, execution_id, Status.QUEUED, values, attempt=attempt)
        return row is not None

    async def release(self, execution_id: uuid.UUID, attempt: int, delay_s: float = 0) -> bool:
        values: dict[str, Any] = {"handbacks": C.handbacks + 1}
        if delay_s > 0:
            runnable_at = db_later(self.dialect, delay_s)
            values |= {"not_before": runnable_at, "queued_at": runnable_at}
        row = await self._apply(
            Move.HAND_BACK, execution_id, Status.QUEUED, values, attempt=attempt
        )
        return row is not None

    async def cancel(
        self, execution_id: uuid.UUID, *, platform: dict[str, Any] | None = None
    ) -> Execution:
        values = {} if platform is None else {"platform": platform}
        row = await self._apply(Move.CANCEL, execution_id, Status.CANCELLED, values)
        if row is None:
            raise await self._explain_refusal(execution_id, Status.CANCELLED)
        return row

    async def let_go(
        self, execution_id: uuid.UUID, attempt: int, *, delete: bool = False
    ) -> Recorded | None:
        stmt: sa.Update | sa.Delete
        if delete:
            stmt = T.delete()
        else:
            stmt = T.update().values(lease_owner=None, lease_expires_at=None)
        stmt = (
            stmt.where(C.execution_id == execution_id)
            .where(C.attempt == attempt)
            .where(stopping())
            .returning(C.execution_id, *next_on_thread())
        )
        row = (await self._run(stmt)).first()
        if row is None:
            return None
        _, *waiting = row
        return Recorded(Waiting(*waiting) if waiting[0] is not None else None)

    async def stopping_expired(
        self, now: datetime | None = None, *, limit: int = 1000
    ) -> list[Execution]:
        at = db_now(self.dialect) if now is None else now
        query = T.select().where(stopping()).where(C.lease_expires_at < at).limit(limit)
        return [_row_to_execution(row) for row in await self._run(query)]

    async def delete(self, execution_id: uuid.UUID) -> None:
        stmt = (
            T.delete()
            .where(C.execution_id == execution_id)
            .where(C.status.in_([s.value for s in TERMINAL]))
            .where(~stopping())
        )
        deleted = (await self._run(stmt)).rowcount
        if not deleted:
            current = await self.get(execution_id)  # raises NotFound
            raise ExecutionActive(
                str(execution_id), current.status, stopping=current.status in TERMINAL
            )

    async def resume(self, execution_id: uuid.UUID, value: Any) -> Execution:
        row = await self._apply(
            Move.RESUME, execution_id, Status.QUEUED, {"resume": value, "has_resume": True}
        )
        if row is None:
            raise await self._explain_refusal(execution_id, Status.QUEUED)
        return row

    async def requeue_expired(
        self, now: datetime | None = None, *, max_recoveries: int | None = None
    ) -> list[Waiting]:
        at = db_now(self.dialect) if now is None else now
        expired = C.lease_expires_at < at
        async with self._begin() as conn:
            if max_recoveries is not None:
                # Attempts that ended neither in a recorded failure nor in a hand-back
                # were lost with their worker, this one included.
                length = (
                    sa.func.jsonb_array_length
                    if self.dialect == "postgresql"
                    else sa.func.json_array_length
                )
                lost = C.attempt - C.handbacks - length(C.attempt_errors)
                error = {
                    "type": "worker_lost",
                    "message": f"its worker was lost {max_recoveries + 1} times: the graph "
                    "may be killing its process (memory, a crash in native code)",
                }
                await conn.execute(
                    move(Move.ABANDON, Status.FAILED, at)
                    .where(expired)
                    .where(lost > max_recoveries)
                    .values(error=error)
                )
            stmt = move(Move.RECOVER, Status.QUEUED, at).where(expired).returning(*_WAITING)
            return [Waiting(*row) for row in await conn.execute(stmt)]

    async def queued_before(
        self,
        stale_after_s: float,
        *,
        now: datetime | None = None,
        after: uuid.UUID | None = None,
        limit: int = 1000,
    ) -> list[Waiting]:
        stale = db_later(self.dialect, -stale_after_s, now)
        query = (
            sa.select(*_WAITING)
            .where(C.status == Status.QUEUED.value)
            .where(C.queued_at < stale)
            .order_by(C.execution_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(C.execution_id > after)
        return [Waiting(*row) for row in await self._run(query)]

    async def with_status(
        self, execution_ids: Sequence[uuid.UUID], statuses: Iterable[Status]
    ) -> set[uuid.UUID]:
        if not execution_ids:
            return set()
        query = (
            sa.select(C.execution_id)
            .where(C.execution_id.in_(execution_ids))
            .where(C.status.in_([s.value for s in statuses]))
        )
        return {row[0] for row in await self._run(query)}

    async def overview(self) -> Overview:
        unfinished = [Status.QUEUED, Status.RUNNING, Status.INTERRUPTED]
        by_status = (
            sa.select(C.graph_id, C.status, sa.func.count())
            .where(C.status.in_([s.value for s in unfinished]))
            .group_by(C.graph_id, C.status)
        )
        now = db_now(self.dialect)
        runnable = (
            sa.select(C.graph_id, sa.func.count(), sa.func.min(C.queued_at))
            .where(C.status == Status.QUEUED.value)
            .where(C.queued_at <= now)
            .group_by(C.graph_id)
        )
        async with self._begin() as conn:
            counts = (await conn.execute(by_status)).all()
            backlog = (await conn.execute(runnable)).all()
            at = (
                (await conn.execute(sa.select(now))).scalar_one()
                if self.dialect == "postgresql"
                else now
            )
        return Overview(
            unfinished={(graph, Status(status)): n for graph, status, n in counts},
            runnable={graph: n for graph, n, _ in backlog},
            oldest_runnable_age_s={
                graph: max((at - oldest).total_seconds(), 0.0) for graph, _, oldest in backlog
            },
        )

    async def count_by_status(self, only: Iterable[Status] | None = None) -> dict[Status, int]:
        statuses = list(Status if only is None else only)
        query = sa.select(C.status, sa.func.count()).group_by(C.status)
        if only is not None:
            query = query.where(C.status.in_([s.value for s in statuses]))
        rows = (await self._run(query)).all()
        counts = dict.fromkeys(statuses, 0)
        counts.update({Status(s): n for s, n in rows})
        return counts

    async def prune(
        self,
        *,
        now: datetime | None = None,
        batch_size: int = 500,
        keep_checkpoints: int = 0,
        dry_run: bool = False,
        max_batches: int | None = None,
    ) -> PruneReport:
        self._pruner.batch_size = batch_size
        try:
            return await self._pruner.prune(
                now=now, keep_checkpoints=keep_checkpoints, dry_run=dry_run, max_batches=max_batches
            )
        except _DRIVER_ERRORS as exc:
            if (failure := _failure(exc)) is exc:
                raise
            raise failure from exc

    async def retention_overdue_s(self, now: datetime | None = None) -> float:
        try:
            return await self._pruner.overdue_s(now)
        except _DRIVER_ERRORS as exc:
            if (failure := _failure(exc)) is exc:
                raise
            raise failure from exc
