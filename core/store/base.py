"""The store interface: the source of truth for executions.

Every write a worker makes is fenced on the attempt it claimed (``attempt``): when the
execution moved on (taken over after a lease expired, cancelled), the write matches no
row and returns False, so a zombie can never overwrite a result.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from lg_deploy.core.models import Execution
from lg_deploy.core.states import Status
from lg_deploy.core.store.pruning import PruneReport


@dataclass(frozen=True)
class Page:
    items: Sequence[Execution]
    next_cursor: str | None


@dataclass(frozen=True)
class Outcome:
    """What an attempt produced, recorded by ``Store.finish``."""

    status: Status
    output: Any = None
    error: dict[str, Any] | None = None
    traceback: str | None = None
    interrupts: list[dict[str, Any]] | None = field(default=None)
    # Not stored: the exception behind a FAILED outcome, for the worker's retry decision.
    cause: BaseException | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Overview:
    """The unfinished work of the deployment, per graph, as the store sees it now."""

    # (graph_id, status) -> executions, for QUEUED, RUNNING and INTERRUPTED.
    unfinished: Mapping[tuple[str, Status], int]
    # graph_id -> QUEUED executions that may run now (not waiting out a retry's backoff).
    runnable: Mapping[str, int]
    # graph_id -> seconds the oldest runnable execution has waited since it became runnable.
    oldest_runnable_age_s: Mapping[str, float]


class Waiting(NamedTuple):
    """A QUEUED execution as the queue needs it: which job, and not before when."""

    execution_id: uuid.UUID
    attempt: int
    not_before: datetime | None


@dataclass(frozen=True)
class Recorded:
    """A result was recorded; the execution that waits next on the same thread, if any,
    read in the same round trip."""

    next_on_thread: Waiting | None


class Store(Protocol):
    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the database answers."""

    async def close(self) -> None: ...

    async def create(
        self, execution: Execution, *, reject_if_thread_busy: bool = False
    ) -> tuple[Execution, bool]:
        """Insert ``execution``; with an idempotency key already used by the same request,
        return the earlier execution and False instead (another request: ``IdempotencyConflict``).
        With ``reject_if_thread_busy``, raise ``ThreadBusy`` when the thread has a QUEUED or
        RUNNING execution, atomically with the insert.
        """

    async def get(self, execution_id: uuid.UUID) -> Execution: ...

    async def list_executions(
        self,
        *,
        status: Status | None = None,
        graph_id: str | None = None,
        thread_id: str | None = None,
        limit: int = 50,
        cursor: uuid.UUID | None = None,
    ) -> Page:
        """Newest first; ``cursor`` is the ``next_cursor`` of the page before."""

    async def claim(self, execution_id: uuid.UUID, owner: str, lease_s: float) -> Execution | None:
        """QUEUED -> RUNNING with a new lease and the next attempt number, or None when the
        execution is not claimable (not QUEUED, or its thread is busy)."""

    async def renew_leases(self, leases: Mapping[uuid.UUID, int], lease_s: float) -> set[uuid.UUID]:
        """Extend the leases of the attempts in ``leases`` (execution id -> attempt) to
        ``lease_s`` from now, in one statement; returns the ids still held (the others
        were taken over, cancelled or finished)."""

    async def finish(
        self, execution_id: uuid.UUID, attempt: int, outcome: Outcome
    ) -> Recorded | None:
        """Record the result of ``attempt`` (RUNNING -> outcome.status), fenced (None when
        the attempt no longer holds the execution); a FAILED outcome is also added to
        ``attempt_errors``."""

    async def retry(
        self, execution_id: uuid.UUID, attempt: int, error: dict[str, Any], delay_s: float
    ) -> bool:
        """RUNNING -> QUEUED after a retryable failure: the error is added to
        ``attempt_errors`` and no worker claims it for ``delay_s``. Fenced."""

    async def release(self, execution_id: uuid.UUID, attempt: int, delay_s: float = 0) -> bool:
        """Hand a RUNNING attempt back to the queue (RUNNING -> QUEUED) without using up
        an attempt (``handbacks`` counts it); no worker claims it for ``delay_s``. Fenced."""

    async def cancel(
        self, execution_id: uuid.UUID, *, platform: dict[str, Any] | None = None
    ) -> Execution:
        """Move to CANCELLED (``platform`` replacing its platform fields, in the same
        write), or raise ``NotFound`` / ``InvalidTransition``. A RUNNING execution keeps
        its lease: it is *stopping* until its worker lets go of it (``let_go``), and no
        other execution of its thread is claimed meanwhile."""

    async def let_go(
        self, execution_id: uuid.UUID, attempt: int, *, delete: bool = False
    ) -> Recorded | None:
        """The worker of ``attempt`` has stopped its cancelled graph: clear the lease (or,
        with ``delete``, delete the row: a rolled-back run) so the thread runs its next
        execution, returned in the same round trip. None when the attempt held no
        cancelled execution (it finished, or was taken over)."""

    async def stopping_expired(
        self, now: datetime | None = None, *, limit: int = 1000
    ) -> list[Execution]:
        """Cancelled executions still stopping whose lease ended before ``now`` (the
        database's clock when None): their worker died before it let go; the reconciler
        lets go of them."""

    async def delete(self, execution_id: uuid.UUID) -> None:
        """Delete a COMPLETED, FAILED or CANCELLED execution's row, or raise ``NotFound`` /
        ``ExecutionActive`` (also for a cancelled execution still stopping)."""

    async def resume(self, execution_id: uuid.UUID, value: Any) -> Execution:
        """INTERRUPTED -> QUEUED carrying ``value`` for the paused graph."""

    async def requeue_expired(
        self, now: datetime | None = None, *, max_recoveries: int | None = None
    ) -> list[Waiting]:
        """RUNNING executions whose lease ended before ``now`` (the database's clock when
        None) go back to QUEUED; those whose workers were already lost ``max_recoveries``
        times become FAILED (``worker_lost``) instead."""

    async def queued_before(
        self,
        stale_after_s: float,
        *,
        now: datetime | None = None,
        after: uuid.UUID | None = None,
        limit: int = 1000,
    ) -> list[Waiting]:
        """QUEUED executions runnable for more than ``stale_after_s`` before ``now`` (the
        database's clock when None), in id order from ``after`` on."""

    async def with_status(
        self, execution_ids: Sequence[uuid.UUID], statuses: Iterable[Status]
    ) -> set[uuid.UUID]:
        """Those of ``execution_ids`` whose status is one of ``statuses``, in one query."""

    async def overview(self) -> Overview:
        """Unfinished executions per graph and status, and the runnable backlog: index
        lookups over unfinished rows only, never a scan of the finished history."""

    async def count_by_status(self, only: Iterable[Status] | None = None) -> dict[Status, int]:
        """How many executions have each status (``only`` these: an index lookup each,
        where every status means a scan of the table)."""

    async def prune(
        self,
        *,
        now: datetime | None = None,
        batch_size: int = 500,
        keep_checkpoints: int = 0,
        dry_run: bool = False,
        max_batches: int | None = None,
    ) -> PruneReport:
        """One prune pass (``core/store/pruning.py``): executions whose ``delete_after`` is
        before ``now`` (the database's clock when None), ``batch_size`` per transaction, the
        checkpoints of the threads they leave empty, and all but the newest
        ``keep_checkpoints`` (0: all kept) of each live thread; counted only when
        ``dry_run``. ``ran`` is False when another pass held the lock."""

    async def retention_overdue_s(self, now: datetime | None = None) -> float:
        """Seconds the oldest execution a pass may delete has waited past its
        ``delete_after`` (0 when none is due)."""
