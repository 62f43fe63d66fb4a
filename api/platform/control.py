"""Stopping runs: cancel (``interrupt``: the run stops where it is and keeps the steps it
finished) and ``rollback`` (the run and the checkpoints it wrote are deleted)."""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.api import metrics
from lg_deploy.core.errors import BackendUnavailable, InvalidTransition
from lg_deploy.core.events import CANCELLED, EventLog, NewEvent
from lg_deploy.core.models import Execution
from lg_deploy.core.platform.checkpoints import checkpoints_of_execution
from lg_deploy.core.platform.temporary import delete_temporary_thread, deletes_its_thread
from lg_deploy.core.queue import Queue
from lg_deploy.core.states import Status
from lg_deploy.core.store.platform_base import PlatformStore

log = logging.getLogger("lg_deploy.api")

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
    runs it); with ``rollback``, delete it and its checkpoints too. False when the run had
    already ended."""
    was = execution.status
    try:
        await store.cancel(execution.execution_id)
    except InvalidTransition:
        return False
    metrics.CANCELLED.labels(execution.graph_id).inc()
    eid = execution.execution_id
    with contextlib.suppress(BackendUnavailable):
        await queue.publish("cancelled", eid)
        await queue.publish("settled", eid)
    with contextlib.suppress(BackendUnavailable):
        await events.append(eid, [NewEvent(CANCELLED, "{}")])
    if action == "rollback":
        await rollback(execution, store=store, checkpointer=checkpointer)
    if deletes_its_thread(execution) and (was is Status.QUEUED or action == "rollback"):
        # No worker will see this run again (it was waiting, or it is gone): its temporary
        # thread is deleted here (core/platform/temporary.py).
        await delete_temporary_thread(store, checkpointer, execution.thread_id)
    return True


async def rollback(
    execution: Execution, *, store: PlatformStore, checkpointer: BaseCheckpointSaver
) -> None:
    """Delete a cancelled run and the checkpoints it wrote, so that its thread is as it was
    before the run. (A worker learns of the cancel within the notice's delay; a checkpoint
    it writes in between outlives the rollback: docs/compat.md.)"""
    thread_id, eid = execution.thread_id, str(execution.execution_id)
    written = await checkpoints_of_execution(checkpointer, thread_id, eid)
    await store.delete_checkpoints(thread_id, written)
    await store.delete(execution.execution_id)
    log.info("run %s rolled back: %d checkpoints deleted", eid, len(written))
