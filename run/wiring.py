"""Opening the backends a process needs from its settings, and closing them in order.

Settings are read once, by the entry points; everything below takes them as arguments.
A worker's own wiring is in ``run/worker_process.py``: an API process of a fleet never
imports the worker plane (and so exports none of its metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from lg_deploy.api.deps import Backends
from lg_deploy.core.errors import BackendRefused, BackendUnavailable
from lg_deploy.core.queue import Queue, open_queue
from lg_deploy.core.settings import Settings
from lg_deploy.core.store import Store, open_store

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
    store = open_store(settings.resolved_database_url(), pool_size=settings.database_pool_size)
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
