"""Temporary threads: the thread a threadless run (``POST /runs``, ``/runs/wait``,
``/runs/stream``) gets, deleted with its checkpoints once the run is over unless the run
asked to keep it (``on_completion="keep"``). The run's own record stays.

"Over" is what the store says: completed (paused for a person included), failed, timed
out, cancelled. A run handed back for a retry, or to be resumed on another worker, is not
over, and its next attempt continues from the thread's checkpoints. Who deletes it:

- the worker, once it has recorded the run's end (``worker/platform_run.py`` on success,
  before the result is recorded; ``worker/runner.py`` after every other ending, and after
  a cancelled run's graph has stopped);
- the API, when it cancels a run that no graph runs (queued): no worker will see it again;
- the reconciler, for those left behind (``sweep_temporary_threads``): the worker died
  between recording the end and deleting, or a deletion failed.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core.errors import BackendUnavailable, NotFound
from lg_deploy.core.models import Execution
from lg_deploy.core.platform.runs import RunOptions
from lg_deploy.core.store.platform_base import PlatformStore

log = logging.getLogger("lg_deploy.platform")

# Threads deleted per sweep at most: a pass stays short, the next one goes on.
SWEEP_LIMIT = 100


def deletes_its_thread(execution: Execution) -> bool:
    """A threadless run whose temporary thread goes when the run is over."""
    options = RunOptions.of(execution)
    return options is not None and options.deletes_thread


async def delete_temporary_thread(
    store: PlatformStore, checkpointer: BaseCheckpointSaver, thread_id: str
) -> None:
    """The thread's checkpoints, then its row; its runs stay. Deleting one that is gone
    already is no error (several parties may try)."""
    await checkpointer.adelete_thread(thread_id)
    with contextlib.suppress(NotFound):
        await store.delete_thread(thread_id, keep_runs=True)


async def sweep_temporary_threads(
    store: PlatformStore,
    checkpointer: BaseCheckpointSaver,
    *,
    limit: int = SWEEP_LIMIT,
    created_after: datetime | None = None,
) -> int:
    """Delete temporary threads whose run is over but which are still there (of those
    created after ``created_after``, when given); returns how many it deleted (at most
    ``limit``). One that cannot be deleted is logged and left for a later sweep; an
    outage (``BackendUnavailable``) ends the sweep."""
    found = await store.ended_temporary_threads(limit=limit, created_after=created_after)
    deleted = 0
    for thread_id in found:
        try:
            await delete_temporary_thread(store, checkpointer, thread_id)
        except BackendUnavailable:
            raise
        except Exception:
            log.exception("cannot delete the temporary thread %s", thread_id)
            continue
        deleted += 1
    if deleted:
        log.info("deleted %d temporary threads whose runs had ended", deleted)
    return deleted
