"""Rolling back a cancelled run of the LangGraph Platform API (``action=rollback``): the
run and the checkpoints it wrote are deleted, so that its thread is as it was before it.

A run that was only queued is rolled back by the API at once. A running one is marked
(its platform fields say ``rollback``) and rolled back by its worker once its graph has
stopped, before the worker lets go of its thread (``worker/runner.py``): no checkpoint can
land after the rollback, and the thread's next run starts from the state before it.
"""

from __future__ import annotations

import logging

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core.errors import NotFound
from lg_deploy.core.models import Execution
from lg_deploy.core.platform.checkpoints import checkpoints_of_execution
from lg_deploy.core.store.platform_base import PlatformStore

log = logging.getLogger(__name__)

ROLLBACK = "rollback"


def asked_for_rollback(execution: Execution) -> bool:
    return bool((execution.platform or {}).get(ROLLBACK))


def marked_for_rollback(execution: Execution) -> dict[str, object]:
    """The run's platform fields, with the rollback asked for."""
    return {**(execution.platform or {}), ROLLBACK: True}


async def delete_written_checkpoints(
    execution: Execution, *, store: PlatformStore, checkpointer: BaseCheckpointSaver
) -> int:
    """Delete the checkpoints ``execution`` wrote on its thread; how many there were."""
    thread_id, eid = execution.thread_id, str(execution.execution_id)
    written = await checkpoints_of_execution(checkpointer, thread_id, eid)
    await store.delete_checkpoints(thread_id, written)
    return len(written)


async def delete_run(execution: Execution, *, store: PlatformStore, checkpoints: int) -> None:
    """Delete the rolled-back run's row (already gone: another pass did it)."""
    try:
        await store.delete(execution.execution_id)
    except NotFound:
        return
    log.info("run %s rolled back: %d checkpoints deleted", execution.execution_id, checkpoints)
