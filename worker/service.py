"""The worker service: takes ids from the queue, runs them, and keeps the store honest.

Besides serving the queue it runs background loops: one stops graphs that were cancelled
elsewhere (a queue nudge, the store flag being the truth); the reconciler, which
re-enqueues RUNNING executions whose lease expired and QUEUED ones that are not moving,
lets go of cancelled executions whose worker died while stopping them, and deletes the
temporary threads of threadless runs that ended without their worker deleting them; and
the pruner (``worker/pruning.py``), which deletes what outlived its retention. Several
reconcilers may run at once: every move they make is a conditional UPDATE, enqueueing an
id that already waits is a no-op, and deleting a thread that is gone already is none
either. A last loop hands freed memory back to the system (``worker/memory.py``). Two
threads watch over it: the lease keeper (``worker/leases.py``) and the loop watch
(``worker/loop_watch.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core import logcontext
from lg_deploy.core.checkpoint import EXECUTION_ID_KEY
from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.events import EventLog
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import utcnow
from lg_deploy.core.platform.temporary import (
    SWEEP_LIMIT,
    sweep_temporary_threads,
)
from lg_deploy.core.queue import Queue
from lg_deploy.core.states import Status
from lg_deploy.core.store import Store, Waiting
from lg_deploy.core.store.platform_base import PlatformStore
from lg_deploy.worker import metrics
from lg_deploy.worker.leases import LeaseKeeper
from lg_deploy.worker.loop_watch import Culprit, LoopWatch
from lg_deploy.worker.memory import trim_forever
from lg_deploy.worker.pruning import PruneSchedule, prune_forever
from lg_deploy.worker.retries import RetryPolicy
from lg_deploy.worker.runner import Durability, Limits, Runner, StopReason

log = logging.getLogger("lg_deploy.worker")

# How far back the reconciler's regular passes look for temporary threads left behind.
SWEEP_HORIZON = timedelta(days=1)


def worker_name() -> str:
    """A name unique to this process, used as the lease owner."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class LoopLimits:
    """When a blocked event loop is logged, and when the worker counts as stuck."""

    warn_s: float = 1.0
    limit_s: float = 60.0


class WorkerService:
    def __init__(
        self,
        store: Store,
        queue: Queue,
        registry: GraphRegistry,
        checkpointer: BaseCheckpointSaver,
        *,
        open_lease_store: Callable[[], Store],
        concurrency: int = 10,
        lease_s: float = 30.0,
        reconcile_interval_s: float = 10.0,
        max_recoveries: int | None = 10,
        limits: Limits | None = None,
        loop_limits: LoopLimits | None = None,
        retry: RetryPolicy | None = None,
        durability: Durability = "sync",
        name: str | None = None,
        events: EventLog | None = None,
        prune: PruneSchedule | None = None,
    ) -> None:
        self.store = store
        self.prune = prune
        self.queue = queue
        self.concurrency = concurrency
        self.reconcile_interval_s = reconcile_interval_s
        self.max_recoveries = max_recoveries
        self.name = name or worker_name()
        logcontext.describe_process(worker=self.name)
        loop_limits = loop_limits or LoopLimits()
        self.loop_watch = LoopWatch(
            warn_s=loop_limits.warn_s,
            limit_s=loop_limits.limit_s,
            execution_key=EXECUTION_ID_KEY,
            graph_of=self._graph_of,
            on_stuck=self._stuck,
        )
        self.leases = LeaseKeeper(
            open_lease_store,
            lease_s=lease_s,
            on_lost=self._lease_lost,
            paused=self.loop_watch.stuck,
        )
        self.runner = Runner(
            store,
            queue,
            registry,
            checkpointer,
            self.leases,
            owner=self.name,
            lease_s=lease_s,
            limits=limits,
            retry=retry,
            durability=durability,
            events=events,
        )
        self._stop = asyncio.Event()
        self._swept_all = False
        self._tasks: list[asyncio.Task[None]] = []
        self._serving: asyncio.Task[None] | None = None

    async def start(self, *, orphans_are_mine: bool = False) -> None:
        """Recover what a previous process left, then serve in the background.

        ``orphans_are_mine``: this process is the only worker of its database (the
        one-process ``memory://`` mode), so every RUNNING row is an orphan of an earlier
        process and goes back to QUEUED now instead of after its lease.
        """
        self.leases.start()
        self.loop_watch.start()
        await self.reconcile(requeue_all_running=orphans_are_mine, stale_after_s=0)
        metrics.SLOTS.set(self.concurrency)
        metrics.prepare(self.runner.registry.graphs)
        self._serving = asyncio.create_task(
            self.queue.serve(self.runner.run, concurrency=self.concurrency, stop=self._stop)
        )
        ready = asyncio.Event()
        self._tasks = [
            asyncio.create_task(self._reconcile_forever()),
            asyncio.create_task(self._follow_cancellations(ready)),
            asyncio.create_task(trim_forever()),
        ]
        if self.prune is not None and self.prune.interval_s > 0:
            self._tasks.append(asyncio.create_task(prune_forever(self.store, self.prune)))
        await ready.wait()
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
        self.loop_watch.stop()
        self.leases.stop()
        metrics.SLOTS.set(0)
        log.info("worker %s stopped", self.name)

    def hand_back_all(self) -> None:
        """Stop every running graph now; each execution goes back to the queue without
        using up an attempt (a second SIGTERM, or the end of the drain period)."""
        self.runner.stop_all(StopReason.SHUTDOWN)

    def alive(self) -> str | None:
        """Why this worker should be restarted, or None while it is healthy: its event loop
        is stuck, or it stopped serving the queue. A backend outage is not a reason: the
        worker waits it out and comes back by itself. Safe to call from any thread."""
        if self.loop_watch.stuck():
            return f"the event loop has been blocked for {self.loop_watch.blocked_for():.0f} s"
        if self._serving is not None and self._serving.done() and not self._stop.is_set():
            return "the queue loop has stopped"
        return None

    @property
    def platform_store(self) -> PlatformStore:
        return cast(PlatformStore, self.store)  # the SQL store: core/store/platform_sql.py

    def _graph_of(self, execution_id: str) -> str | None:
        attempt = self.runner.attempts.get(uuid.UUID(execution_id))
        return attempt.execution.graph_id if attempt is not None else None

    def _lease_lost(self, execution_id: uuid.UUID) -> None:
        self.runner.lease_lost(execution_id)

    def _stuck(self, culprit: Culprit, blocked_s: float) -> None:
        """Called from the loop watch's thread once the loop is blocked past its limit."""
        log.error(
            "the event loop has been blocked for %.0f s: no lease is renewed until it runs "
            "again, so other workers take the executions over",
            blocked_s,
        )
        if culprit.execution_id is None:
            return
        attempt = self.runner.attempts.get(uuid.UUID(culprit.execution_id))
        if attempt is None:
            return
        attempt.clock.lost = True
        execution = attempt.execution
        self.leases.fail(
            execution.execution_id,
            execution.attempt,
            execution.graph_id,
            {
                "type": "event_loop_blocked",
                "message": f"node {culprit.node!r} blocked its worker's event loop for more "
                f"than {self.loop_watch.limit_s:g} s, so the execution was failed rather than "
                "run again on another worker. An async node must not call blocking code "
                "(time.sleep, a synchronous client): make it a plain def, which LangGraph runs "
                "in a thread, or await an async call.",
            },
        )

    async def reconcile(
        self, *, requeue_all_running: bool = False, stale_after_s: float | None = None
    ) -> int:
        """One pass: re-enqueue stranded executions; returns how many it enqueued."""
        cutoff = utcnow() + timedelta(days=36500) if requeue_all_running else None
        stale_after = self.reconcile_interval_s if stale_after_s is None else stale_after_s
        expired = await self.store.requeue_expired(cutoff, max_recoveries=self.max_recoveries)
        for waiting in expired:
            log.warning(
                "execution %s: the lease of attempt %d expired; queued again",
                waiting.execution_id,
                waiting.attempt,
            )
            await self.runner.reenqueue(waiting)
        metrics.RECOVERED.inc(len(expired))
        # Cancelled executions whose worker died while their graph was stopping: their
        # threads run their next executions.
        for stopped in await self.store.stopping_expired(cutoff):
            await self.runner.let_go(stopped)
        revived = 0
        after: uuid.UUID | None = None
        while batch := await self.store.queued_before(stale_after, after=after):
            revived += await self._revive(batch)
            after = batch[-1].execution_id
        metrics.REVIVED.inc(revived)
        await self._sweep_temporary_threads()
        metrics.LAST_RECONCILE.set(time.time())
        return len(expired) + revived

    async def _sweep_temporary_threads(self) -> None:
        """Delete the temporary threads of threadless runs that ended without their worker
        deleting them (it died in between, or the deletion failed). The first pass looks at
        every thread; later ones at those of the last ``SWEEP_HORIZON`` (an index range,
        not a scan of the table): a thread left behind is swept by the next pass of any
        worker, and an older one by the next worker that starts."""
        store, saver = self.platform_store, self.runner.checkpointer
        if self._swept_all:
            since = utcnow() - SWEEP_HORIZON
            await sweep_temporary_threads(store, saver, created_after=since)
            return
        while await sweep_temporary_threads(store, saver, limit=SWEEP_LIMIT) == SWEEP_LIMIT:
            pass
        self._swept_all = True

    async def _revive(self, batch: list[Waiting]) -> int:
        """Put the jobs of executions that wait too long back in line; enqueue again only
        those with no job left that are still QUEUED now (the job may just have run them)."""
        held = await self.queue.held([(w.execution_id, w.attempt) for w in batch])
        lost = [waiting for waiting in batch if waiting.execution_id not in held]
        still = await self.store.with_status([w.execution_id for w in lost], [Status.QUEUED])
        for waiting in lost:
            if waiting.execution_id in still:
                await self.runner.reenqueue(waiting)
        return len(still)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            try:
                await self.reconcile()
            except BackendUnavailable as exc:
                log.warning("reconciler: %s", exc)
            except Exception:
                log.exception("reconciler pass failed")

    async def _follow_cancellations(self, ready: asyncio.Event) -> None:
        while True:
            try:
                async with self.queue.subscribe("cancelled") as notices:
                    ready.set()
                    async for execution_id in notices:
                        if self.runner.stop(execution_id, StopReason.CANCELLED):
                            log.info("execution %s cancelled: graph stopped", execution_id)
            except BackendUnavailable as exc:
                ready.set()
                log.warning("cancel notices: %s", exc)
                await asyncio.sleep(1)
