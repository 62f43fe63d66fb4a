"""The queue interface. It carries execution ids only and is a hint, never the truth:
losing its contents loses nothing, because the store's reconciler re-enqueues."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

Handler = Callable[[uuid.UUID], Awaitable[None]]

# Notices about executions, for every process that listens (best effort, never the truth):
# "cancelled" stops a graph at once on whichever worker runs it; "settled" (a result was
# recorded) wakes the API's long polls.
Topic = Literal["cancelled", "settled"]


class Queue(Protocol):
    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the queue answers."""

    async def close(self) -> None: ...

    async def enqueue(
        self, execution_id: uuid.UUID, *, attempt: int = 0, delay_s: float = 0
    ) -> None:
        """Ask a worker to run ``execution_id``; ``attempt`` tells deliveries apart.
        Enqueueing what already waits is a no-op."""

    async def held(self, jobs: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        """Of executions that have waited too long (the reconciler's call), given with
        their attempts, those whose job waits in line or a worker took a moment ago. The
        others have no job (lost, or taken by a worker that died): the caller checks the
        store, then enqueues them again, so that a job is never started twice. One round
        trip for them all."""

    async def depth(self) -> int:
        """Ids waiting to be picked up."""

    async def publish(self, topic: Topic, execution_id: uuid.UUID) -> None:
        """Tell every subscriber of ``topic`` about ``execution_id`` (best effort)."""

    def subscribe(self, topic: Topic) -> AbstractAsyncContextManager[AsyncIterator[uuid.UUID]]:
        """The ids published on ``topic``. The subscription is made on entering the
        context, so nothing published after that is missed."""

    async def serve(self, handler: Handler, *, concurrency: int, stop: asyncio.Event) -> None:
        """Deliver ids to ``handler``, at most ``concurrency`` at once, until ``stop`` is set;
        then return once the handlers in flight have returned."""
