"""One SQL store for PostgreSQL (asyncpg) and SQLite (aiosqlite), through SQLAlchemy.

Every state change is a single conditional UPDATE whose WHERE clause names the statuses
the state machine allows as sources, so two writers can never both win; worker writes
are also fenced on the attempt they claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from lg_deploy.core.database_errors import first_line, is_database_outage
from lg_deploy.core.errors import (
    BackendUnavailable,
    IdempotencyConflict,
    InvalidTransition,
    NotFound,
    ThreadBusy,
)
from lg_deploy.core.models import Execution, utcnow
from lg_deploy.core.states import ACTIVE, TERMINAL, Move, Status, sources_of
from lg_deploy.core.store.base import Outcome, Page, Waiting

T = Execution.__table__  # type: ignore[attr-defined]
C = T.c


# Every status change carries this execution option naming its move, so a test can prove
# that none bypasses the state machine (tests/test_states.py).
MOVE_OPTION = "lg_deploy_move"


def _move(move: Move, wanted: Status, now: Any) -> sa.Update:
    """The UPDATE of one move of the state machine: only rows in one of the move's source
    statuses (``core/states.py``) change, so of two racing writers exactly one wins.
    Callers narrow it to the rows they mean."""
    stmt = (
        T.update()
        .where(C.status.in_([s.value for s in sources_of(move, wanted)]))
        .values(status=wanted.value, updated_at=now)
        .execution_options(**{MOVE_OPTION: move.value})
    )
    if wanted in TERMINAL:
        stmt = stmt.values(finished_at=now, lease_owner=None, lease_expires_at=None)
    return stmt


def _claim_statement() -> sa.Update:
    """QUEUED -> RUNNING for ``:claim_id``, unless an older execution of the same thread
    is still queued (a thread's executions run in submission order). Built once: the
    aliases are costly to make per call."""
    me, earlier = T.alias("me"), T.alias("earlier")
    claim_id = sa.bindparam("claim_id", type_=sa.Uuid())
    older_queued_on_thread = (
        sa.select(earlier.c.execution_id)
        .where(earlier.c.thread_id == me.c.thread_id)
        .where(earlier.c.status == Status.QUEUED.value)
        .where(earlier.c.execution_id < me.c.execution_id)
        .where(me.c.execution_id == claim_id)
    )
    now = sa.bindparam("now", type_=C.not_before.type)
    return (
        _move(Move.CLAIM, Status.RUNNING, now)
        .where(C.execution_id == claim_id)
        .where(sa.or_(C.not_before.is_(None), C.not_before <= now))
        .where(~sa.exists(older_queued_on_thread))
    )


_CLAIM = _claim_statement()


def _row_to_execution(row: sa.Row[Any]) -> Execution:
    values = dict(row._mapping)
    values["meta"] = values.pop("metadata")
    return Execution.model_validate(values)


def _values(execution: Execution) -> dict[str, Any]:
    values = execution.model_dump()
    values["metadata"] = values.pop("meta")
    return values


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers run beside the writer; busy_timeout makes writers wait, not fail.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class SQLStore:
    """The store over an ``AsyncEngine``; it disposes of the engine it created itself."""

    def __init__(self, engine: AsyncEngine, *, owns_engine: bool = False) -> None:
        self.engine = engine
        self._owns_engine = owns_engine
        # SQLite (one process) serializes "insert unless the thread is busy" with this lock;
        # PostgreSQL with a transaction-scoped advisory lock on the thread.
        self._thread_lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> SQLStore:
        if url.startswith("sqlite"):
            engine = create_async_engine(url, **engine_kwargs)
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            # A server that stops answering must become a 503, not a request that hangs:
            # seconds to connect, and to run one statement.
            engine_kwargs.setdefault("connect_args", {"timeout": 5, "command_timeout": 10})
            engine_kwargs.setdefault("pool_pre_ping", True)
            engine_kwargs.setdefault("pool_size", 10)
            engine_kwargs.setdefault("max_overflow", 10)
            engine_kwargs.setdefault("pool_timeout", 10)
            engine = create_async_engine(url, **engine_kwargs)
        return cls(engine, owns_engine=True)

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _begin(self) -> AsyncIterator[AsyncConnection]:
        """A transaction; connection-level failures become ``BackendUnavailable``."""
        try:
            async with self.engine.begin() as conn:
                yield conn
        except sa.exc.IntegrityError:
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError) as exc:
            raise BackendUnavailable("database", first_line(exc)) from exc
        except sa.exc.DBAPIError as exc:
            if is_database_outage(exc):
                raise BackendUnavailable("database", first_line(exc)) from exc
            raise
        except (OSError, ConnectionError) as exc:
            raise BackendUnavailable("database", first_line(exc)) from exc

    async def ping(self) -> None:
        async with self._begin() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def create(
        self, execution: Execution, *, reject_if_thread_busy: bool = False
    ) -> tuple[Execution, bool]:
        if reject_if_thread_busy and execution.idempotency_key is not None:
            # A retry of a request that was accepted finds its own execution, not a busy
            # thread (the thread is busy with that very execution).
            earlier = await self._get_by_key(execution.idempotency_key)
            if earlier is not None:
                return self._replay(earlier, execution), False
        try:
            if reject_if_thread_busy:
                await self._insert_unless_thread_busy(execution)
            else:
                async with self._begin() as conn:
                    await conn.execute(T.insert().values(**_values(execution)))
            return execution, True
        except sa.exc.IntegrityError:
            if execution.idempotency_key is None:
                raise
        existing = await self._get_by_key(execution.idempotency_key)
        if existing is None:  # the other row vanished: nothing is left to conflict with
            return await self.create(execution, reject_if_thread_busy=reject_if_thread_busy)
        return self._replay(existing, execution), False

    @staticmethod
    def _replay(existing: Execution, request: Execution) -> Execution:
        """The execution an idempotent retry gets back, or ``IdempotencyConflict``."""
        if existing.request_hash != request.request_hash:
            raise IdempotencyConflict(str(request.idempotency_key))
        return existing

    async def _insert_unless_thread_busy(self, execution: Execution) -> None:
        busy = (
            sa.select(C.execution_id)
            .where(C.thread_id == execution.thread_id)
            .where(C.status.in_([s.value for s in ACTIVE]))
            .limit(1)
        )
        async with self._thread_lock, self._begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(execution.thread_id)))
                )
            if (await conn.execute(busy)).first() is not None:
                raise ThreadBusy(execution.thread_id)
            await conn.execute(T.insert().values(**_values(execution)))

    async def _get_by_key(self, key: str) -> Execution | None:
        async with self._begin() as conn:
            row = (await conn.execute(T.select().where(C.idempotency_key == key))).first()
        return None if row is None else _row_to_execution(row)

    async def get(self, execution_id: uuid.UUID) -> Execution:
        async with self._begin() as conn:
            row = (await conn.execute(T.select().where(C.execution_id == execution_id))).first()
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
        async with self._begin() as conn:
            rows = (await conn.execute(query)).all()
        items = [_row_to_execution(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page(items=items, next_cursor=str(items[-1].execution_id) if more else None)

    async def _apply(
        self,
        move: Move,
        execution_id: uuid.UUID,
        wanted: Status,
        values: Mapping[str, Any],
        *,
        attempt: int | None = None,
    ) -> Execution | None:
        """Apply ``move`` to one execution in one conditional UPDATE; None when it did not
        apply (the execution was not in a source status, or ``attempt`` moved on)."""
        stmt = (
            _move(move, wanted, utcnow())
            .where(C.execution_id == execution_id)
            .values(**values)
            .returning(*T.c)
        )
        if attempt is not None:
            stmt = stmt.where(C.attempt == attempt)
        async with self._begin() as conn:
            row = (await conn.execute(stmt)).first()
        return None if row is None else _row_to_execution(row)

    async def _explain_refusal(self, execution_id: uuid.UUID, wanted: Status) -> InvalidTransition:
        current = await self.get(execution_id)  # raises NotFound
        return InvalidTransition(current.status, wanted)

    async def claim(self, execution_id: uuid.UUID, owner: str, lease_s: float) -> Execution | None:
        now = utcnow()
        stmt = _CLAIM.values(
            attempt=C.attempt + 1,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            started_at=sa.func.coalesce(C.started_at, now),
        ).returning(*T.c)
        try:
            async with self._begin() as conn:
                params = {"claim_id": execution_id, "now": now}
                row = (await conn.execute(stmt, params)).first()
        except sa.exc.IntegrityError:
            return None  # another execution of this thread is RUNNING (invariant 5)
        return None if row is None else _row_to_execution(row)

    async def heartbeat(self, execution_id: uuid.UUID, attempt: int, lease_s: float) -> bool:
        now = utcnow()
        stmt = (
            T.update()
            .where(C.execution_id == execution_id)
            .where(C.status == Status.RUNNING.value)
            .where(C.attempt == attempt)
            .values(lease_expires_at=now + timedelta(seconds=lease_s), updated_at=now)
        )
        async with self._begin() as conn:
            result = await conn.execute(stmt)
        return result.rowcount == 1

    async def _with_attempt_error(
        self, execution_id: uuid.UUID, attempt: int, error: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """``attempt_errors`` plus this attempt's error. Read, then written by an UPDATE
        fenced on the same attempt: nobody else writes the row in between and wins."""
        async with self._begin() as conn:
            current = (
                await conn.execute(
                    sa.select(C.attempt_errors).where(C.execution_id == execution_id)
                )
            ).scalar()
        entry = {"attempt": attempt, **error, "at": utcnow().isoformat()}
        return [*(current or []), entry]

    async def finish(self, execution_id: uuid.UUID, attempt: int, outcome: Outcome) -> bool:
        values: dict[str, Any] = {
            "output": outcome.output,
            "error": outcome.error,
            "error_traceback": outcome.traceback,
            "interrupts": outcome.interrupts,
            "resume": None,
            "has_resume": False,
        }
        if outcome.status is Status.INTERRUPTED:
            values |= {"lease_owner": None, "lease_expires_at": None}
        if outcome.status is Status.FAILED and outcome.error is not None:
            values["attempt_errors"] = await self._with_attempt_error(
                execution_id, attempt, outcome.error
            )
        row = await self._apply(Move.FINISH, execution_id, outcome.status, values, attempt=attempt)
        return row is not None

    async def retry(
        self, execution_id: uuid.UUID, attempt: int, error: dict[str, Any], delay_s: float
    ) -> bool:
        values = {
            "lease_owner": None,
            "lease_expires_at": None,
            "error": error,
            "attempt_errors": await self._with_attempt_error(execution_id, attempt, error),
            "not_before": utcnow() + timedelta(seconds=delay_s),
        }
        row = await self._apply(Move.RETRY, execution_id, Status.QUEUED, values, attempt=attempt)
        return row is not None

    async def release(self, execution_id: uuid.UUID, attempt: int) -> bool:
        row = await self._apply(
            Move.HAND_BACK,
            execution_id,
            Status.QUEUED,
            {"lease_owner": None, "lease_expires_at": None, "handbacks": C.handbacks + 1},
            attempt=attempt,
        )
        return row is not None

    async def cancel(self, execution_id: uuid.UUID) -> Execution:
        row = await self._apply(Move.CANCEL, execution_id, Status.CANCELLED, {})
        if row is None:
            raise await self._explain_refusal(execution_id, Status.CANCELLED)
        return row

    async def resume(self, execution_id: uuid.UUID, value: Any) -> Execution:
        row = await self._apply(
            Move.RESUME, execution_id, Status.QUEUED, {"resume": value, "has_resume": True}
        )
        if row is None:
            raise await self._explain_refusal(execution_id, Status.QUEUED)
        return row

    async def requeue_expired(
        self, now: datetime, *, max_recoveries: int | None = None
    ) -> list[Waiting]:
        expired = C.lease_expires_at < now
        async with self._begin() as conn:
            if max_recoveries is not None:
                # Attempts that ended neither in a recorded failure nor in a hand-back
                # were lost with their worker, this one included.
                length = (
                    sa.func.jsonb_array_length
                    if conn.dialect.name == "postgresql"
                    else sa.func.json_array_length
                )
                lost = C.attempt - C.handbacks - length(C.attempt_errors)
                error = {
                    "type": "worker_lost",
                    "message": f"its worker was lost {max_recoveries + 1} times: the graph "
                    "may be killing its process (memory, a crash in native code)",
                }
                await conn.execute(
                    _move(Move.ABANDON, Status.FAILED, utcnow())
                    .where(expired)
                    .where(lost > max_recoveries)
                    .values(error=error)
                )
            stmt = (
                _move(Move.RECOVER, Status.QUEUED, utcnow())
                .where(expired)
                .values(lease_owner=None, lease_expires_at=None)
                .returning(C.execution_id, C.attempt, C.not_before)
            )
            return [Waiting(*row) for row in await conn.execute(stmt)]

    async def queued_before(
        self, before: datetime, *, after: uuid.UUID | None = None, limit: int = 1000
    ) -> list[Waiting]:
        query = (
            sa.select(C.execution_id, C.attempt, C.not_before)
            .where(C.status == Status.QUEUED.value)
            .where(C.updated_at < before)
            .order_by(C.execution_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(C.execution_id > after)
        async with self._begin() as conn:
            return [Waiting(*row) for row in await conn.execute(query)]

    async def next_queued_on_thread(self, thread_id: str) -> Waiting | None:
        query = (
            sa.select(C.execution_id, C.attempt, C.not_before)
            .where(C.thread_id == thread_id)
            .where(C.status == Status.QUEUED.value)
            .order_by(C.execution_id)
            .limit(1)
        )
        async with self._begin() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else Waiting(*row)

    async def count_by_status(self, only: Iterable[Status] | None = None) -> dict[Status, int]:
        statuses = list(Status if only is None else only)
        query = sa.select(C.status, sa.func.count()).group_by(C.status)
        if only is not None:
            query = query.where(C.status.in_([s.value for s in statuses]))
        async with self._begin() as conn:
            rows = (await conn.execute(query)).all()
        counts = dict.fromkeys(statuses, 0)
        counts.update({Status(s): n for s, n in rows})
        return counts
