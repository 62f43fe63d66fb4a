"""The execution record, as stored.

The record is shaped so that a LangGraph-Platform-style runs API maps onto it: an
execution is a run of ``graph_id`` (the assistant) on ``thread_id``, with ``input``,
``config``, ``metadata`` and a status. The lease columns (``lease_owner``,
``lease_expires_at``) and ``attempt`` belong to the worker that holds it; ``attempt``
is also the fencing token every worker write is conditioned on. The attempts an
execution has used are ``attempt - handbacks``.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from lg_deploy.core.states import Status

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend.

    SQLite keeps no zone: values are stored as UTC and read back with ``tzinfo=UTC``.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
            if dialect.name == "sqlite":
                value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Execution(SQLModel):
    """An execution as the store reads and writes it: a plain model, cheap to build (an
    instance of the table class below pays for SQLAlchemy's attribute instrumentation on
    every field it sets)."""

    execution_id: uuid.UUID = Field(primary_key=True)
    graph_id: str = Field(max_length=200)
    thread_id: str = Field(max_length=200)
    input: Any = Field(default=None, sa_type=JSONType, nullable=True)
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    # "metadata" is reserved on SQLAlchemy declarative classes.
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column("metadata", JSONType, nullable=False)
    )
    status: Status = Field(
        default=Status.QUEUED,
        sa_column=sa.Column(sa.String(16), nullable=False, default=Status.QUEUED.value),
    )
    output: Any = Field(default=None, sa_type=JSONType, nullable=True)
    error: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # Kept for operators: never part of the API's default answer.
    error_traceback: str | None = Field(default=None, sa_type=sa.Text)
    interrupts: list[dict[str, Any]] | None = Field(default=None, sa_type=JSONType)
    # The value given to POST /resume, consumed by the next attempt that resumes the graph.
    resume: Any = Field(default=None, sa_type=JSONType, nullable=True)
    has_resume: bool = Field(default=False)
    timeout_s: float | None = Field(default=None)
    # LangGraph's durability for this execution (sync, async, exit); None: its graph's.
    durability: str | None = Field(default=None, max_length=8)
    # Claims so far: the fencing token of the current attempt.
    attempt: int = Field(default=0)
    # Attempts handed back unfinished (graceful shutdown): they consume no retry budget.
    handbacks: int = Field(default=0)
    max_attempts: int = Field(default=1)
    # A retry waits until then; no worker claims the execution before it.
    not_before: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # One entry per failed attempt: {attempt, type, message, at}.
    attempt_errors: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSONType)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True)
    # The X-Request-ID of the submission: it follows the execution into the worker's logs.
    request_id: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # When it last became runnable while QUEUED: submitted, handed back, recovered, resumed,
    # or a retry's backoff over. Queue wait is measured from here to the claim.
    queued_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # A run of the LangGraph Platform API (api/platform/): the assistant it runs, and the
    # platform's own fields of the run (core/platform/runs.py). None for /execute.
    assistant_id: uuid.UUID | None = Field(default=None)
    platform: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    # Seconds the execution is kept once COMPLETED, FAILED or CANCELLED, and once
    # INTERRUPTED; None: for ever. Settled at submit (core/retention.py).
    retention_s: float | None = Field(default=None)
    interrupted_retention_s: float | None = Field(default=None)
    # When the pruner may delete the row: stamped by the move that ends or pauses it
    # from the retention above, cleared when it runs again (core/store/statements.py).
    delete_after: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def attempts_used(self) -> int:
        return self.attempt - self.handbacks


def _partial_index(name: str, *columns: str, where: str, unique: bool = False) -> sa.Index:
    """An index of the rows ``where`` holds for, on PostgreSQL and SQLite alike."""
    condition = sa.text(where)
    return sa.Index(
        name, *columns, unique=unique, sqlite_where=condition, postgresql_where=condition
    )


class ExecutionTable(Execution, table=True):
    """The executions table, described by the same fields: the store's statements and the
    migrations are made from it; nothing builds instances of it."""

    __tablename__ = "executions"
    __table_args__ = (
        sa.Index("ix_executions_status_id", "status", "execution_id"),
        sa.Index("ix_executions_graph_id_id", "graph_id", "execution_id"),
        sa.Index("ix_executions_thread_id_id", "thread_id", "execution_id"),
        sa.Index("ix_executions_status_queued_at", "status", "queued_at"),
        # The queued executions of a thread (a claim waits for older ones, a finish reads the
        # next): a partial index, so a thread's finished history is never scanned.
        _partial_index(
            "ix_executions_queued_thread", "thread_id", "execution_id", where="status = 'QUEUED'"
        ),
        # A cancelled execution whose worker has not yet let go of it (it keeps its lease
        # until its graph stops): its thread takes no other claim meanwhile (invariant 5).
        _partial_index(
            "ix_executions_stopping_thread",
            "thread_id",
            where="status = 'CANCELLED' AND lease_owner IS NOT NULL",
        ),
        # The rows the pruner may delete, oldest first; the rest are never in it.
        _partial_index(
            "ix_executions_delete_after", "delete_after", where="delete_after IS NOT NULL"
        ),
        # Invariant 5: at most one RUNNING execution per thread, enforced by the database.
        _partial_index(
            "ux_executions_running_thread", "thread_id", where="status = 'RUNNING'", unique=True
        ),
    )


class Assistant(SQLModel, table=True):
    """A configured variant of a graph (LangGraph Platform API): the current version of
    its config, context and metadata. One per graph is made by the system at start-up."""

    __tablename__ = "assistants"

    assistant_id: uuid.UUID = Field(primary_key=True)
    graph_id: str = Field(max_length=200)
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    context: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column("metadata", JSONType, nullable=False)
    )
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, sa_type=sa.Text)
    version: int = Field(default=1)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AssistantVersion(SQLModel, table=True):
    """Every version an assistant had; the assistant row holds the one in use."""

    __tablename__ = "assistant_versions"

    assistant_id: uuid.UUID = Field(primary_key=True)
    version: int = Field(primary_key=True)
    graph_id: str = Field(max_length=200)
    config: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    context: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column("metadata", JSONType, nullable=False)
    )
    name: str = Field(max_length=200)
    description: str | None = Field(default=None, sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Thread(SQLModel, table=True):
    """A conversation of the LangGraph Platform API. Its checkpoints are the savers'; this
    row holds its metadata and what its last run (or state update) left: ``status`` is the
    status while no run is active (idle, interrupted or error: busy is derived from the
    executions), ``state_values`` the state's values, ``interrupts`` task id -> interrupts."""

    __tablename__ = "threads"
    __table_args__ = (sa.Index("ix_threads_created_at", "created_at"),)

    thread_id: str = Field(primary_key=True, max_length=200)
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column=sa.Column("metadata", JSONType, nullable=False)
    )
    status: str = Field(default="idle", max_length=16)
    state_values: Any = Field(default=None, sa_type=JSONType, nullable=True)
    interrupts: dict[str, Any] | None = Field(default=None, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    state_updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
