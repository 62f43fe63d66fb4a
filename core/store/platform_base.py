"""The store interface of the LangGraph Platform API: assistants, threads, and the queries
over executions that runs need. ``SQLStore`` implements it (``platform_sql.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from lg_deploy.core.models import Assistant, AssistantVersion, Execution, Thread
from lg_deploy.core.states import Status
from lg_deploy.core.store.base import Store

IfExists = Literal["raise", "do_nothing"]
SortOrder = Literal["asc", "desc"]


@dataclass(frozen=True)
class Found:
    """One page of a search, and how many match in all."""

    items: Sequence[Any]
    total: int


@dataclass(frozen=True)
class AssistantQuery:
    graph_id: str | None = None
    name: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ThreadQuery:
    ids: Sequence[str] | None = None
    metadata: Mapping[str, Any] | None = None
    status: str | None = None


class PlatformStore(Store, Protocol):
    # Assistants
    async def ensure_assistants(self, assistants: Sequence[Assistant]) -> None:
        """Insert those of ``assistants`` that do not exist yet (version 1)."""

    async def create_assistant(self, assistant: Assistant, if_exists: IfExists) -> Assistant:
        """Insert at version 1; an existing id: ``AlreadyExists`` or the existing one."""

    async def get_assistant(self, assistant_id: uuid.UUID) -> Assistant: ...

    async def update_assistant(
        self, assistant_id: uuid.UUID, changes: Mapping[str, Any]
    ) -> Assistant:
        """A new version with ``changes`` (graph_id, config, context, meta, name,
        description); it becomes the one in use."""

    async def set_assistant_version(self, assistant_id: uuid.UUID, version: int) -> Assistant: ...

    async def delete_assistant(self, assistant_id: uuid.UUID) -> None: ...

    async def search_assistants(
        self, query: AssistantQuery, *, limit: int, offset: int, sort_by: str, order: SortOrder
    ) -> Found: ...

    async def assistant_versions(
        self,
        assistant_id: uuid.UUID,
        *,
        metadata: Mapping[str, Any] | None,
        limit: int,
        offset: int,
    ) -> list[AssistantVersion]: ...

    # Threads
    async def create_thread(self, thread: Thread, if_exists: IfExists) -> Thread: ...

    async def get_thread(self, thread_id: str) -> Thread:
        """The thread with its status as the platform shows it (busy while a run is
        active); ``NotFound`` otherwise."""

    async def search_threads(
        self, query: ThreadQuery, *, limit: int, offset: int, sort_by: str, order: SortOrder
    ) -> Found: ...

    async def update_thread_metadata(self, thread_id: str, metadata: Mapping[str, Any]) -> Thread:
        """Merge ``metadata`` into the thread's."""

    async def record_thread_state(
        self,
        thread_id: str,
        *,
        status: str,
        values: Any,
        interrupts: dict[str, Any] | None,
        fenced_on: tuple[uuid.UUID, int] | None = None,
    ) -> bool:
        """What a run or a state update left on the thread. With ``fenced_on`` (execution
        id, attempt), only while that attempt still runs."""

    async def delete_thread(self, thread_id: str, *, keep_runs: bool = False) -> None:
        """The thread row and every finished execution on it (with ``keep_runs``, the row
        only: a temporary thread's run stays visible); ``NotFound``."""

    async def ended_temporary_threads(
        self, *, limit: int, created_after: datetime | None = None
    ) -> list[str]:
        """Up to ``limit`` temporary threads (of threadless runs with ``on_completion``
        delete, ``core/platform/temporary.py``) whose run has ended, and that still exist;
        only those created after ``created_after`` when given (an index range, where all
        threads are a scan of the table)."""

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
        """Newest first; ``timeout`` narrows FAILED to timeouts (True) or to the rest."""

    async def active_runs(self, *, thread_id: str | None = None) -> list[Execution]:
        """QUEUED and RUNNING executions of ``thread_id`` (without one: the platform's
        runs of every thread), oldest first."""

    async def delete_checkpoints(self, thread_id: str, checkpoint_ids: Sequence[str]) -> None:
        """Delete these checkpoints of the thread and their pending writes from the
        LangGraph savers' tables (a rollback)."""
