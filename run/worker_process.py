"""A worker's wiring, and ``lg-deploy worker``: a worker process of the fleet, until
SIGTERM or SIGINT.

The first signal stops taking work and lets running executions finish for ``drain_s``
seconds, then hands the rest back to the queue (no attempt is used up); a second signal,
at any time until the worker has stopped, hands them back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from lg_deploy.api.deps import Backends, BackendsFactory
from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.settings import Settings
from lg_deploy.core.store import open_store
from lg_deploy.run.probes import ProbeServer
from lg_deploy.run.wiring import open_backends
from lg_deploy.worker.pruning import PruneSchedule
from lg_deploy.worker.retries import RetryPolicy
from lg_deploy.worker.runner import Limits
from lg_deploy.worker.service import LoopLimits, WorkerService

log = logging.getLogger("lg_deploy.worker")


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, registry: GraphRegistry, backends: Backends, *, drain_s: float
) -> AsyncIterator[WorkerService]:
    """A worker serving the queue of ``backends`` until the block ends; then it drains
    for ``drain_s`` seconds and hands back what still runs."""
    url = settings.resolved_database_url()
    async with open_checkpointer(url, pool_size=settings.database_pool_size) as checkpointer:
        worker = WorkerService(
            backends.store,
            backends.queue,
            registry,
            checkpointer,
            # The lease keeper's thread has a connection of its own, so that a blocked
            # event loop cannot starve the renewals.
            open_lease_store=lambda: open_store(url, pool_size=1),
            concurrency=settings.worker_concurrency,
            lease_s=settings.lease_s,
            reconcile_interval_s=settings.reconcile_interval_s,
            max_recoveries=settings.max_recoveries,
            limits=Limits(
                default_timeout_s=settings.execution_timeout_s,
                max_output_bytes=settings.max_output_bytes,
                unknown_graph_grace_s=settings.unknown_graph_grace_s,
            ),
            loop_limits=LoopLimits(
                warn_s=settings.loop_warn_s, limit_s=settings.loop_block_limit_s
            ),
            retry=RetryPolicy(
                retry_on=settings.retry_on_set(),
                backoff_s=settings.retry_backoff_s,
                backoff_max_s=settings.retry_backoff_max_s,
            ),
            durability=settings.durability,
            events=backends.events,
            prune=PruneSchedule(
                interval_s=settings.prune_interval_s,
                batch_size=settings.prune_batch_size,
                keep_checkpoints=settings.checkpoints_keep,
            ),
        )
        await worker.start(orphans_are_mine=settings.queue_url.startswith("memory://"))
        try:
            yield worker
        finally:
            await worker.stop(drain_s=drain_s)


def backends_with_worker(settings: Settings, registry: GraphRegistry) -> BackendsFactory:
    """For ``lg-deploy dev``: the backends, with a worker serving them in this process."""

    @contextlib.asynccontextmanager
    async def opened() -> AsyncIterator[Backends]:
        async with (
            open_backends(settings, events=True, checkpointer=True) as backends,
            running_worker(settings, registry, backends, drain_s=0.0),
        ):
            yield backends

    return opened


async def run_worker(settings: Settings, registry: GraphRegistry) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    serving: list[WorkerService] = []

    def on_signal(signum: int) -> None:
        if not stop.is_set():
            log.info(
                "%s: finishing running executions (up to %.0f s), then stopping",
                signal.Signals(signum).name,
                settings.drain_s,
            )
            stop.set()
            return
        log.info("second signal: handing running executions back now")
        for worker in serving:
            worker.hand_back_all()

    probes = None
    if settings.metrics_port:
        probes = ProbeServer(settings.metrics_addr, settings.metrics_port)
        probes.start()
        log.info(
            "metrics and probes on http://%s:%d (/metrics, /healthz, /readyz)",
            settings.metrics_addr,
            settings.metrics_port,
        )
    # Installed until the drain is over, so that a second signal can cut it short.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with (
            open_backends(settings, events=True) as backends,
            running_worker(settings, registry, backends, drain_s=settings.drain_s) as worker,
        ):
            serving.append(worker)
            if probes is not None:
                probes.liveness = worker.alive
                probes.serving = True
            await stop.wait()
            if probes is not None:
                probes.serving = False
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        if probes is not None:
            probes.stop()
