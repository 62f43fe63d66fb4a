"""Opening what a process needs from its settings, and closing it in order.

Settings are read once, by the entry points; everything below takes them as arguments.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from lg_deploy.api.deps import Backends, BackendsFactory
from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.errors import BackendRefused, BackendUnavailable
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.queue import Queue, open_queue
from lg_deploy.core.settings import Settings
from lg_deploy.core.store import Store, open_store
from lg_deploy.worker.retries import RetryPolicy
from lg_deploy.worker.runner import Limits
from lg_deploy.worker.service import LoopLimits, WorkerService

log = logging.getLogger("lg_deploy")


async def wait_for_backends(store: Store, queue: Queue, timeout_s: float) -> None:
    """Retry the database and the queue until both answer; after ``timeout_s`` raise the
    last ``BackendUnavailable``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = 0.25
    for name, backend in (("database", store), ("queue", queue)):
        while True:
            try:
                await backend.ping()
                break
            except BackendRefused:
                raise  # a wrong role, password or database: waiting will not fix it
            except BackendUnavailable as exc:
                if loop.time() + delay > deadline:
                    raise
                log.warning("%s not reachable yet (%s); retrying in %.1f s", name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


@contextlib.asynccontextmanager
async def open_backends(settings: Settings) -> AsyncIterator[Backends]:
    """The store and the queue of ``settings``, once both answer; closed on exit."""
    store = open_store(settings.resolved_database_url())
    queue = open_queue(
        settings.queue_url,
        name=settings.queue_name,
        poll_delay_s=settings.queue_poll_s,
        read_limit=settings.queue_read_limit,
    )
    try:
        await wait_for_backends(store, queue, settings.startup_timeout_s)
        yield Backends(store, queue)
    finally:
        await queue.close()
        await store.close()


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, registry: GraphRegistry, backends: Backends, *, drain_s: float
) -> AsyncIterator[WorkerService]:
    """A worker serving the queue of ``backends`` until the block ends; then it drains
    for ``drain_s`` seconds and hands back what still runs."""
    url = settings.resolved_database_url()
    async with open_checkpointer(url) as checkpointer:
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
            open_backends(settings) as backends,
            running_worker(settings, registry, backends, drain_s=0.0),
        ):
            yield backends

    return opened
