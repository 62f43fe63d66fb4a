"""Wiring: the backends one process needs, opened from settings and closed in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.queue import Queue, open_queue
from lg_deploy.core.settings import Settings
from lg_deploy.core.store import Store, open_store
from lg_deploy.worker.runner import RetryPolicy
from lg_deploy.worker.service import WorkerService

log = logging.getLogger("lg_deploy")


@dataclass
class Runtime:
    """What the API's routes reach through dependencies; tests may swap a part."""

    settings: Settings
    registry: GraphRegistry
    store: Store
    queue: Queue
    worker: WorkerService | None = None


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
            except BackendUnavailable as exc:
                if loop.time() + delay > deadline:
                    raise
                log.warning("%s not reachable yet (%s); retrying in %.1f s", name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


@contextlib.asynccontextmanager
async def open_runtime(
    settings: Settings, registry: GraphRegistry, *, run_worker: bool, drain_s: float = 0.0
) -> AsyncIterator[Runtime]:
    """Open the store and the queue, and with ``run_worker`` a worker in this process."""
    url = settings.resolved_database_url()
    store = open_store(url)
    queue = open_queue(
        settings.queue_url,
        name=settings.queue_name,
        poll_delay_s=settings.queue_poll_s,
        read_limit=settings.queue_read_limit,
    )
    try:
        await wait_for_backends(store, queue, settings.startup_timeout_s)
        if not run_worker:
            yield Runtime(settings, registry, store, queue)
            return
        async with open_checkpointer(url) as checkpointer:
            worker = WorkerService(
                store,
                queue,
                registry,
                checkpointer,
                concurrency=settings.worker_concurrency,
                lease_s=settings.lease_s,
                default_timeout_s=settings.execution_timeout_s,
                reconcile_interval_s=settings.reconcile_interval_s,
                max_recoveries=settings.max_recoveries,
                retry=RetryPolicy(
                    retry_on=settings.retry_on_set(),
                    backoff_s=settings.retry_backoff_s,
                    backoff_max_s=settings.retry_backoff_max_s,
                ),
            )
            await worker.start(orphans_are_mine=settings.queue_url.startswith("memory://"))
            try:
                yield Runtime(settings, registry, store, queue, worker)
            finally:
                await worker.stop(drain_s=drain_s)
    finally:
        await queue.close()
        await store.close()
