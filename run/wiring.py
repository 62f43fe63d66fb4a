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
from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.errors import BackendRefused, BackendUnavailable
from lg_deploy.core.events import EventLog, open_event_log
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


def event_log(settings: Settings) -> EventLog:
    return open_event_log(
        settings.resolved_events_url(),
        prefix=settings.events_prefix,
        maxlen=settings.stream_maxlen,
        ttl_s=settings.stream_ttl_s,
    )


@contextlib.asynccontextmanager
async def open_backends(
    settings: Settings, *, events: bool = False, checkpointer: bool = False
) -> AsyncIterator[Backends]:
    """The store and the queue of ``settings``, once both answer; closed on exit. With
    ``events``, the runs' event log too (API and workers); with ``checkpointer``, a
    checkpointer of the database (the API, for threads' state)."""
    url = settings.resolved_database_url()
    store = open_store(url, pool_size=settings.database_pool_size)
    queue = open_queue(
        settings.queue_url,
        name=settings.queue_name,
        poll_delay_s=settings.queue_poll_s,
        read_limit=settings.queue_read_limit,
    )
    log_of_events = event_log(settings) if events else None
    try:
        await wait_for_backends(store, queue, settings.startup_timeout_s)
        if not checkpointer:
            yield Backends(store, queue, log_of_events)
            return
        async with open_checkpointer(url, pool_size=5) as saver:
            yield Backends(store, queue, log_of_events, saver)
    finally:
        if log_of_events is not None:
            await log_of_events.close()
        await queue.close()
        await store.close()
