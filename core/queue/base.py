"""The queue interface. It carries execution ids only and is a hint, never the truth:
losing its contents loses nothing, because the store's reconciler re-enqueues."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

Handler = Callable[[uuid.UUID], Awaitable[None]]


class Queue(Protocol):
    async def ping(self) -> None:
        """Raise ``BackendUnavailable`` unless the queue answers."""

    async def close(self) -> None: ...

    async def enqueue(
        self,
        execution_id: uuid.UUID,
        *,
        attempt: int = 0,
        delay_s: float = 0,
        revive: bool = False,
    ) -> None:
        """Ask a worker to run ``execution_id``; ``attempt`` tells deliveries apart.

        ``revive``: the execution has waited too long (the reconciler's call), so clear
        whatever the backend may still hold it by; a duplicate delivery is harmless."""

    async def depth(self) -> int:
        """Ids waiting to be picked up."""

    async def publish_cancel(self, execution_id: uuid.UUID) -> None:
        """Nudge every worker that ``execution_id`` was cancelled (best effort)."""

    def cancellations(self) -> AsyncIterator[uuid.UUID]:
        """The ids published with ``publish_cancel`` from now on."""

    async def serve(self, handler: Handler, *, concurrency: int, stop: asyncio.Event) -> None:
        """Deliver ids to ``handler``, at most ``concurrency`` at once, until ``stop`` is set;
        then return once the handlers in flight have returned."""
