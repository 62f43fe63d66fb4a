"""Lease renewal from a thread of its own, with a database connection of its own.

The leases of every attempt running in a worker are renewed together, in one statement,
every third of the lease length. The thread runs its own event loop and its own store
(opened with ``open_store``): a graph node that blocks the worker's event loop cannot
make the worker lose its leases, and the other executions keep theirs. When a renewal
finds an attempt gone (taken over, cancelled), or a failed renewal lets its lease pass,
``on_lost`` is called on the worker's loop.

While the worker's loop is stuck past its limit (``worker/loop_watch.py``), nothing is
renewed, so that other workers take the executions over; the execution that blocked it is
failed (``event_loop_blocked``) so that it cannot block the next worker too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.states import Status
from lg_deploy.core.store import Outcome, Store
from lg_deploy.worker import metrics
from lg_deploy.worker.fencing import LeaseClock

log = logging.getLogger("lg_deploy.worker")


class LeaseKeeper:
    def __init__(
        self,
        open_store: Callable[[], Store],
        *,
        lease_s: float,
        on_lost: Callable[[uuid.UUID], None],
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.open_store = open_store
        self.lease_s = lease_s
        self.on_lost = on_lost
        self.paused = paused
        self._clocks: dict[uuid.UUID, LeaseClock] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="lg-deploy-leases", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._store: Store | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._worker_loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """Call on the worker's event loop."""
        self._worker_loop = asyncio.get_running_loop()
        self._thread.start()
        self._ready.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=30)

    def hold(self, execution_id: uuid.UUID, clock: LeaseClock) -> None:
        with self._lock:
            self._clocks[execution_id] = clock

    def release(self, execution_id: uuid.UUID) -> None:
        with self._lock:
            self._clocks.pop(execution_id, None)

    def fail(
        self, execution_id: uuid.UUID, attempt: int, graph_id: str, error: dict[str, str]
    ) -> None:
        """Record ``error`` for ``attempt`` from this thread (fenced), whatever the worker's
        loop is doing."""
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(
                self._fail(execution_id, attempt, graph_id, error), self._loop
            )

    async def _fail(
        self, execution_id: uuid.UUID, attempt: int, graph_id: str, error: dict[str, str]
    ) -> None:
        assert self._store is not None
        try:
            if await self._store.finish(execution_id, attempt, Outcome(Status.FAILED, error=error)):
                log.error("execution %s attempt %d failed: %s", execution_id, attempt, error)
                metrics.FINISHED.labels(graph_id, Status.FAILED.value).inc()
                metrics.FAILED.labels(graph_id, error["type"]).inc()
        except BackendUnavailable as exc:
            log.warning("execution %s: cannot record its failure: %s", execution_id, exc)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._store = self.open_store()
        self._ready.set()
        try:
            while not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.lease_s / 3)
                if not self._stopping.is_set():
                    await self._renew()
        finally:
            await self._store.close()

    async def _renew(self) -> None:
        assert self._store is not None
        with self._lock:
            clocks = dict(self._clocks)
        if self.paused():
            self._report_lapsed(clocks)
            return
        if not clocks:
            metrics.LAST_HEARTBEAT.set(time.time())  # alive, with nothing to renew
            return
        asked_at = time.monotonic()
        try:
            held = await self._store.renew_leases(
                {eid: clock.attempt for eid, clock in clocks.items()}, self.lease_s
            )
        except BackendUnavailable as exc:
            log.warning("cannot renew %d lease(s): %s", len(clocks), exc)
            self._report_lapsed(clocks)
            return
        metrics.LAST_HEARTBEAT.set(time.time())
        for eid, clock in clocks.items():
            if eid in held:
                clock.renewed(asked_at)
            else:
                clock.lost = True
                self._lost(eid)

    def _report_lapsed(self, clocks: dict[uuid.UUID, LeaseClock]) -> None:
        """Attempts whose lease may have passed without renewal stop."""
        for eid, clock in clocks.items():
            if not clock.held():
                self._lost(eid)

    def _lost(self, execution_id: uuid.UUID) -> None:
        if self._worker_loop is not None and not self._worker_loop.is_closed():
            self._worker_loop.call_soon_threadsafe(self.on_lost, execution_id)
