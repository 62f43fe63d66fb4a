"""The SQL of the LangGraph Platform API (``platform_base.py``), mixed into ``SQLStore``:
assistants and their versions, threads, and the queries over executions that runs need.

A thread's status is derived here and only here: ``busy`` while one of its executions is
QUEUED or RUNNING, otherwise the status its last run or state update recorded.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection

from lg_deploy.core.errors import NotFound
from lg_deploy.core.models import Assistant, AssistantVersion, Execution, Thread, utcnow
from lg_deploy.core.platform.errors import AlreadyExists
from lg_deploy.core.platform.statuses import TIMEOUT
from lg_deploy.core.states import ACTIVE, TERMINAL, Status
from lg_deploy.core.store.platform_base import (
    AssistantQuery,
    Found,
    IfExists,
    SortOrder,
    ThreadQuery,
)
from lg_deploy.core.store.statements import T as E
from lg_deploy.core.store.statements import stopping

A = Assistant.__table__  # type: ignore[attr-defined]
V = AssistantVersion.__table__  # type: ignore[attr-defined]
TH = Thread.__table__  # type: ignore[attr-defined]

_ACTIVE = [s.value for s in ACTIVE]
# The savers' tables that hold a checkpoint and its pending writes, by dialect.
_CHECKPOINT_TABLES = {
    "postgresql": ("checkpoint_writes", "checkpoints"),
    "sqlite": ("writes", "checkpoints"),
}
_VERSIONED = ("graph_id", "config", "context", "metadata", "name", "description")


def _model(model: Any, row: sa.Row[Any]) -> Any:
    values = dict(row._mapping)
    if "metadata" in values:
        values["meta"] = values.pop("metadata")
    return model.model_validate(values)


def _columns(instance: Any) -> dict[str, Any]:
    values: dict[str, Any] = instance.model_dump()
    if "meta" in values:
        values["metadata"] = values.pop("meta")
    return values


def _busy() -> sa.ColumnElement[bool]:
    """The thread has a run queued or running, or a cancelled one still stopping."""
    return (
        sa.exists()
        .where(E.c.thread_id == TH.c.thread_id)
        .where(sa.or_(E.c.status.in_(_ACTIVE), stopping(E)))
    )


def _thread_status() -> sa.ColumnElement[str]:
    return sa.case((_busy(), "busy"), else_=TH.c.status).label("derived_status")


def _thread(row: Any) -> Thread:
    values = dict(row._mapping)
    values["status"] = values.pop("derived_status")
    values["meta"] = values.pop("metadata")
    return Thread.model_validate(values)


def _order(column: sa.ColumnElement[Any], order: SortOrder) -> sa.UnaryExpression[Any]:
    return column.asc() if order == "asc" else column.desc()


class PlatformQueries:
    """The platform's queries over the store's engine (``SQLStore`` mixes this in)."""

    dialect: str

    def _begin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        raise NotImplementedError  # SQLStore._begin: a transaction, errors translated

    def _insert_ignoring_duplicates(self, table: sa.Table, values: Any) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return postgresql.insert(table).values(values).on_conflict_do_nothing()
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).values(values).on_conflict_do_nothing()

    def _metadata_matches(
        self, column: sa.ColumnElement[Any], metadata: Mapping[str, Any]
    ) -> sa.ColumnElement[bool]:
        """Rows whose JSON ``column`` holds every key of ``metadata`` with its value."""
        if self.dialect == "postgresql":
            return sa.type_coerce(column, JSONB()).contains(dict(metadata))
        matches = [
            sa.func.json_extract(column, '$."' + key.replace('"', "") + '"')
            == sa.func.json_extract(json.dumps(value), "$")
            for key, value in metadata.items()
        ]
        return sa.and_(sa.true(), *matches)

    # Assistants

    async def ensure_assistants(self, assistants: Sequence[Assistant]) -> None:
        async with self._begin() as conn:
            for assistant in assistants:
                values = _columns(assistant)
                if (await conn.execute(self._insert_ignoring_duplicates(A, values))).rowcount:
                    await conn.execute(V.insert().values(self._version_row(values)))

    @staticmethod
    def _version_row(values: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "assistant_id": values["assistant_id"],
            "version": values["version"],
            "created_at": values["updated_at"],
            **{k: values[k] for k in _VERSIONED},
        }

    async def create_assistant(self, assistant: Assistant, if_exists: IfExists) -> Assistant:
        values = _columns(assistant)
        async with self._begin() as conn:
            if (await conn.execute(self._insert_ignoring_duplicates(A, values))).rowcount:
                await conn.execute(V.insert().values(self._version_row(values)))
                return assistant
        if if_exists == "raise":
            raise AlreadyExists("assistant", str(assistant.assistant_id))
        return await self.get_assistant(assistant.assistant_id)

    async def get_assistant(self, assistant_id: uuid.UUID) -> Assistant:
        async with self._begin() as conn:
            row = (await conn.execute(A.select().where(A.c.assistant_id == assistant_id))).first()
        if row is None:
            raise NotFound("assistant", str(assistant_id))
        assistant: Assistant = _model(Assistant, row)
        return assistant

    async def update_assistant(
        self, assistant_id: uuid.UUID, changes: Mapping[str, Any]
    ) -> Assistant:
        for tries_left in (2, 1, 0):
            try:
                return await self._new_version(assistant_id, changes)
            except sa.exc.IntegrityError:
                # A concurrent update took the same version number (SQLite): once more.
                if not tries_left:
                    raise
        raise AssertionError("unreachable")

    async def _new_version(self, assistant_id: uuid.UUID, changes: Mapping[str, Any]) -> Assistant:
        async with self._begin() as conn:
            current = A.select().where(A.c.assistant_id == assistant_id)
            if self.dialect == "postgresql":
                current = current.with_for_update()
            row = (await conn.execute(current)).first()
            if row is None:
                raise NotFound("assistant", str(assistant_id))
            latest = sa.select(sa.func.max(V.c.version)).where(V.c.assistant_id == assistant_id)
            version = ((await conn.execute(latest)).scalar() or 0) + 1
            values = {**dict(row._mapping), **changes, "version": version, "updated_at": utcnow()}
            await conn.execute(V.insert().values(self._version_row(values)))
            await conn.execute(
                A.update()
                .where(A.c.assistant_id == assistant_id)
                .values({k: values[k] for k in (*_VERSIONED, "version", "updated_at")})
            )
        values["meta"] = values.pop("metadata")
        return Assistant.model_validate(values)

    async def set_assistant_version(self, assistant_id: uuid.UUID, version: int) -> Assistant:
        async with self._begin() as conn:
            found = (
                await conn.execute(
                    V.select().where(V.c.assistant_id == assistant_id).where(V.c.version == version)
                )
            ).first()
            if found is None:
                raise NotFound("assistant version", f"{assistant_id} v{version}")
            chosen = {k: found._mapping[k] for k in _VERSIONED}
            await conn.execute(
                A.update()
                .where(A.c.assistant_id == assistant_id)
                .values(**chosen, version=version, updated_at=utcnow())
            )
        return await self.get_assistant(assistant_id)

    async def delete_assistant(self, assistant_id: uuid.UUID) -> None:
        async with self._begin() as conn:
            deleted = (
                await conn.execute(A.delete().where(A.c.assistant_id == assistant_id))
            ).rowcount
            await conn.execute(V.delete().where(V.c.assistant_id == assistant_id))
        if not deleted:
            raise NotFound("assistant", str(assistant_id))

    def _assistant_filter(self, query: AssistantQuery) -> list[sa.ColumnElement[bool]]:
        where: list[sa.ColumnElement[bool]] = []
        if query.graph_id is not None:
            where.append(A.c.graph_id == query.graph_id)
        if query.name is not None:
            where.append(A.c.name.ilike(f"%{query.name}%"))
        if query.metadata:
            where.append(self._metadata_matches(A.c.metadata, query.metadata))
        return where

    async def search_assistants(
        self, query: AssistantQuery, *, limit: int, offset: int, sort_by: str, order: SortOrder
    ) -> Found:
        where = self._assistant_filter(query)
        page = (
            A.select()
            .where(*where)
            .order_by(_order(A.c[sort_by], order), A.c.assistant_id)
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(A).where(*where)
        async with self._begin() as conn:
            rows = (await conn.execute(page)).all()
            total = (await conn.execute(count)).scalar_one()
        return Found([_model(Assistant, r) for r in rows], total)

    async def assistant_versions(
        self,
        assistant_id: uuid.UUID,
        *,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
    ) -> list[AssistantVersion]:
        query = (
            V.select()
            .where(V.c.assistant_id == assistant_id)
            .order_by(V.c.version.desc())
            .limit(limit)
            .offset(offset)
        )
        if metadata:
            query = query.where(self._metadata_matches(V.c.metadata, metadata))
        async with self._begin() as conn:
            rows = (await conn.execute(query)).all()
        return [_model(AssistantVersion, r) for r in rows]

    # Threads

    async def create_thread(self, thread: Thread, if_exists: IfExists) -> Thread:
        async with self._begin() as conn:
            inserted = await conn.execute(self._insert_ignoring_duplicates(TH, _columns(thread)))
        if not inserted.rowcount and if_exists == "raise":
            raise AlreadyExists("thread", thread.thread_id)
        return await self.get_thread(thread.thread_id)

    async def get_thread(self, thread_id: str) -> Thread:
        query = sa.select(*TH.c, _thread_status()).where(TH.c.thread_id == thread_id)
        async with self._begin() as conn:
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound("thread", thread_id)
        return _thread(row)

    async def search_threads(
        self, query: ThreadQuery, *, limit: int, offset: int, sort_by: str, order: SortOrder
    ) -> Found:
        where: list[sa.ColumnElement[bool]] = []
        if query.ids is not None:
            where.append(TH.c.thread_id.in_(list(query.ids)))
        if query.metadata:
            where.append(self._metadata_matches(TH.c.metadata, query.metadata))
        if query.status is not None:
            if query.status == "busy":
                where.append(_busy())
            else:
                where.extend([~_busy(), TH.c.status == query.status])
        sort = _thread_status() if sort_by == "status" else TH.c[sort_by]
        page = (
            sa.select(*TH.c, _thread_status())
            .where(*where)
            .order_by(_order(sort, order), TH.c.thread_id)
            .limit(limit)
            .offset(offset)
        )
        count = sa.select(sa.func.count()).select_from(TH).where(*where)
        async with self._begin() as conn:
            rows = (await conn.execute(page)).all()
            total = (await conn.execute(count)).scalar_one()
        return Found([_thread(r) for r in rows], total)

    async def update_thread_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> Thread:
        async with self._begin() as conn:
            current = (
                await conn.execute(sa.select(TH.c.metadata).where(TH.c.thread_id == thread_id))
            ).first()
            if current is None:
                raise NotFound("thread", thread_id)
            await conn.execute(
                TH.update()
                .where(TH.c.thread_id == thread_id)
                .values(metadata={**(current[0] or {}), **metadata}, updated_at=utcnow())
            )
        return await self.get_thread(thread_id)

    async def record_thread_state(
        self,
        thread_id: str,
        *,
        status: str,
        values: Any,
        interrupts: dict[str, Any] | None,
        fenced_on: tuple[uuid.UUID, int] | None = None,
    ) -> bool:
        now = utcnow()
        stmt = (
            TH.update()
            .where(TH.c.thread_id == thread_id)
            .values(
                status=status,
                state_values=values,
                interrupts=interrupts,
                updated_at=now,
                state_updated_at=now,
            )
        )
        if fenced_on is not None:
            execution_id, attempt = fenced_on
            stmt = stmt.where(
                sa.exists()
                .where(E.c.execution_id == execution_id)
                .where(E.c.attempt == attempt)
                .where(E.c.status == Status.RUNNING.value)
            )
        async with self._begin() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def delete_thread(self, thread_id: str, *, keep_runs: bool = False) -> None:
        async with self._begin() as conn:
            deleted = (await conn.execute(TH.delete().where(TH.c.thread_id == thread_id))).rowcount
            if not keep_runs:
                await conn.execute(
                    E.delete().where(E.c.thread_id == thread_id).where(E.c.status.notin_(_ACTIVE))
                )
        if not deleted:
            raise NotFound("thread", thread_id)

    async def ended_temporary_threads(
        self, *, limit: int, created_after: datetime | None = None
    ) -> list[str]:
        temporary_run_ended = (
            sa.exists()
            .where(E.c.thread_id == TH.c.thread_id)
            .where(E.c.status.in_([s.value for s in TERMINAL]))
            .where(E.c.platform[("kwargs", "temporary")].as_boolean().is_(True))
            .where(E.c.platform["on_completion"].as_string() == "delete")
        )
        query = (
            sa.select(TH.c.thread_id)
            .where(temporary_run_ended)
            .where(~_busy())
            .order_by(TH.c.created_at)
            .limit(limit)
        )
        if created_after is not None:
            query = query.where(TH.c.created_at > created_after)
        async with self._begin() as conn:
            return [row[0] for row in (await conn.execute(query)).all()]

    # Runs

    async def runs_of_thread(
        self,
        thread_id: str,
        *,
        statuses: Iterable[Status] | None = None,
        timeout: bool | None = None,
        limit: int = 10,
        offset: int = 0,
    ) -> list[Execution]:
        query = (
            E.select()
            .where(E.c.thread_id == thread_id)
            .order_by(E.c.execution_id.desc())
            .limit(limit)
            .offset(offset)
        )
        if statuses is not None:
            query = query.where(E.c.status.in_([s.value for s in statuses]))
        if timeout is not None:
            error_type = E.c.error["type"].as_string()
            query = query.where(
                error_type == TIMEOUT
                if timeout
                else sa.or_(error_type.is_(None), error_type != TIMEOUT)
            )
        async with self._begin() as conn:
            rows = (await conn.execute(query)).all()
        return [_execution(r) for r in rows]

    async def active_runs(self, *, thread_id: str | None = None) -> list[Execution]:
        query = E.select().where(E.c.status.in_(_ACTIVE)).order_by(E.c.execution_id)
        if thread_id is not None:
            query = query.where(E.c.thread_id == thread_id)
        else:
            query = query.where(E.c.assistant_id.is_not(None))
        async with self._begin() as conn:
            rows = (await conn.execute(query)).all()
        return [_execution(r) for r in rows]

    async def delete_checkpoints(self, thread_id: str, checkpoint_ids: Sequence[str]) -> None:
        if not checkpoint_ids:
            return
        ids: sa.BindParameter[Any] = sa.bindparam("ids", expanding=True)
        async with self._begin() as conn:
            for table in _CHECKPOINT_TABLES[self.dialect]:
                stmt = sa.text(
                    f"DELETE FROM {table} WHERE thread_id = :thread_id AND checkpoint_id IN :ids"
                ).bindparams(ids)
                await conn.execute(stmt, {"thread_id": thread_id, "ids": list(checkpoint_ids)})


def _execution(row: sa.Row[Any]) -> Execution:
    execution: Execution = _model(Execution, row)
    return execution
