"""The worker service: takes ids from the queue, runs them, and keeps the store honest.

Besides serving the queue it runs two background loops: one stops graphs that were
cancelled elsewhere (a queue nudge, the store flag being the truth), and the reconciler,
which re-enqueues RUNNING executions whose lease expired and QUEUED ones that are not
moving. Several reconcilers may run at once: every move they make is a conditional
UPDATE, and enqueueing an id that already waits is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from datetime import timedelta

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import utcnow
from lg_deploy.core.queue import Queue
from lg_deploy.core.store import Store
from lg_deploy.worker.runner import RetryPolicy, Runner, StopReason

log = logging.getLogger("lg_deploy.worker")


def worker_name() -> str:
    """A name unique to this process, used as the lease owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class WorkerService:
    def __init__(
        self,
        store: Store,
        queue: Queue,
        registry: GraphRegistry,
        checkpointer: BaseCheckpointSaver,
        *,
        concurrency: int = 10,
        lease_s: float = 30.0,
        default_timeout_s: float = 3600.0,
        reconcile_interval_s: float = 10.0,
        max_recoveries: int | None = 10,
        retry: RetryPolicy | None = None,
        name: str | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.concurrency = concurrency
        self.reconcile_interval_s = reconcile_interval_s
        self.max_recoveries = max_recoveries
        self.name = name or worker_name()
        self.runner = Runner(
            store,
            queue,
            registry,
            checkpointer,
            owner=self.name,
            lease_s=lease_s,
            default_timeout_s=default_timeout_s,
            retry=retry,
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._serving: asyncio.Task[None] | None = None

    async def start(self, *, orphans_are_mine: bool = False) -> None:
        """Recover what a previous process left, then serve in the background.

        ``orphans_are_mine``: this process is the only worker of its database (the
        one-process ``memory://`` mode), so every RUNNING row is an orphan of an earlier
        process and goes back to QUEUED now instead of after its lease.
        """
        await self.reconcile(requeue_all_running=orphans_are_mine, stale_after_s=0)
        self._serving = asyncio.create_task(
            self.queue.serve(self.runner.run, concurrency=self.concurrency, stop=self._stop)
        )
        self._tasks = [
            asyncio.create_task(self._reconcile_forever()),
            asyncio.create_task(self._follow_cancellations()),
        ]
        log.info("worker %s serving, concurrency %d", self.name, self.concurrency)

    async def stop(self, drain_s: float = 0.0) -> None:
        """Take no more work, let running executions finish for ``drain_s`` seconds,
        then hand the rest back to the queue."""
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        if self._serving is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._serving), timeout=drain_s)
            self.hand_back_all()
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
        await asyncio.gather(*self._tasks, return_exceptions=True)
        log.info("worker %s stopped", self.name)

    def hand_back_all(self) -> None:
        """Stop every running graph now; each execution goes back to the queue without
        using up an attempt (a second SIGTERM, or the end of the drain period)."""
        self.runner.stop_all(StopReason.SHUTDOWN)

    async def reconcile(
        self, *, requeue_all_running: bool = False, stale_after_s: float | None = None
    ) -> int:
        """One pass: re-enqueue stranded executions; returns how many it enqueued."""
        now = utcnow()
        cutoff = now + timedelta(days=36500) if requeue_all_running else now
        stale_after = self.reconcile_interval_s if stale_after_s is None else stale_after_s
        expired = await self.store.requeue_expired(cutoff, max_recoveries=self.max_recoveries)
        for waiting in expired:
            log.warning(
                "execution %s: the lease of attempt %d expired; queued again",
                waiting.execution_id,
                waiting.attempt,
            )
            await self.runner.reenqueue(waiting, revive=True)
        enqueued = len(expired)
        before = now - timedelta(seconds=stale_after)
        after: uuid.UUID | None = None
        while batch := await self.store.queued_before(before, after=after):
            for waiting in batch:
                await self.runner.reenqueue(waiting, revive=True)
            enqueued += len(batch)
            after = batch[-1].execution_id
        return enqueued

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            try:
                await self.reconcile()
            except BackendUnavailable as exc:
                log.warning("reconciler: %s", exc)
            except Exception:
                log.exception("reconciler pass failed")

    async def _follow_cancellations(self) -> None:
        while True:
            try:
                async for execution_id in self.queue.cancellations():
                    if self.runner.stop(execution_id, StopReason.CANCELLED):
                        log.info("execution %s cancelled: graph stopped", execution_id)
            except BackendUnavailable as exc:
                log.warning("cancel notices: %s", exc)
                await asyncio.sleep(1)
