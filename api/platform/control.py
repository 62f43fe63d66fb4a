"""Stopping runs: cancel (``interrupt``: the run stops where it is and keeps the steps it
finished) and ``rollback`` (the run and the checkpoints it wrote are deleted)."""

from __future__ import annotations

import contextlib
from typing import Literal

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.api import metrics
from lg_deploy.core.errors import BackendUnavailable, InvalidTransition
from lg_deploy.core.events import CANCELLED, EventLog, NewEvent
from lg_deploy.core.models import Execution
from lg_deploy.core.platform.rollback import (
    delete_run,
    delete_written_checkpoints,
    marked_for_rollback,
)
from lg_deploy.core.platform.temporary import delete_temporary_thread, deletes_its_thread
from lg_deploy.core.queue import Queue
from lg_deploy.core.store.platform_base import PlatformStore

CancelAction = Literal["interrupt", "rollback"]


async def cancel_run(
    execution: Execution,
    action: CancelAction,
    *,
    store: PlatformStore,
    queue: Queue,
    events: EventLog,
    checkpointer: BaseCheckpointSaver,
) -> bool:
    """Cancel a queued or running run (the store first, then a notice to the worker that
    runs it); with ``rollback``, delete it and its checkpoints too: at once when no graph
    runs it, else by its worker once the graph has stopped (core/platform/rollback.py).
    A threadless run's temporary thread goes the same way. False when the run had already
    ended."""
    rollback = action == "rollback"
    try:
        cancelled = await store.cancel(
            execution.execution_id, platform=marked_for_rollback(execution) if rollback else None
        )
    except InvalidTransition:
        return False
    metrics.CANCELLED.labels(execution.graph_id).inc()
    eid = execution.execution_id
    with contextlib.suppress(BackendUnavailable):
        await queue.publish("cancelled", eid)
        await queue.publish("settled", eid)
    with contextlib.suppress(BackendUnavailable):
        await events.append(eid, [NewEvent(CANCELLED, "{}")])
    if cancelled.lease_owner is not None:
        return True  # its worker rolls it back and deletes its thread once it has stopped
    if rollback:
        written = await delete_written_checkpoints(
            cancelled, store=store, checkpointer=checkpointer
        )
        await delete_run(cancelled, store=store, checkpoints=written)
    if deletes_its_thread(cancelled):
        # No worker will see this run again: its temporary thread is deleted here
        # (core/platform/temporary.py).
        await delete_temporary_thread(store, checkpointer, cancelled.thread_id)
    return True
