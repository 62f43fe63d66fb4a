"""The worker's background prune passes (``core/store/pruning.py`` does the deleting).

Every worker runs the loop; the store lets one pass run at a time, so a worker whose turn
it is not returns at once. Passes start at a random point of the interval (jitter), so
that workers started together do not all try at the same moment. A failed pass is logged
and counted; it never stops the worker.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.store import Store
from lg_deploy.core.store.pruning import PruneReport
from lg_deploy.worker import metrics

log = logging.getLogger("lg_deploy.worker")


@dataclass(frozen=True)
class PruneSchedule:
    """How often a worker prunes (0: never) and how."""

    interval_s: float = 60.0
    batch_size: int = 500
    keep_checkpoints: int = 0


async def prune_once(store: Store, schedule: PruneSchedule) -> PruneReport:
    """One pass, its counts added to the metrics."""
    report = await store.prune(
        batch_size=schedule.batch_size, keep_checkpoints=schedule.keep_checkpoints
    )
    if report.ran:
        metrics.PRUNED_EXECUTIONS.inc(report.executions)
        metrics.PRUNED_CHECKPOINTS.inc(report.checkpoints)
        metrics.LAST_PRUNE.set(time.time())
        metrics.RETENTION_OVERDUE.set(await store.retention_overdue_s())
        if report.executions or report.checkpoints:
            log.info(
                "pruned %d executions, %d checkpoints (%d threads emptied, %d skipped)",
                report.executions,
                report.checkpoints,
                report.threads,
                report.skipped_threads,
            )
    else:
        # Another worker's pass ran and reports the backlog: a value this worker saw
        # earlier would only be stale (the alert reads the max over workers).
        metrics.RETENTION_OVERDUE.set(0)
    return report


async def prune_forever(store: Store, schedule: PruneSchedule) -> None:
    """A pass every ``interval_s`` (jittered by up to half of it either way)."""
    # Counted from start-up: a pruner that never succeeds is noticed (docs/observability.md).
    metrics.LAST_PRUNE.set(time.time())
    while True:
        await asyncio.sleep(schedule.interval_s * random.uniform(0.5, 1.5))
        try:
            await prune_once(store, schedule)
        except BackendUnavailable as exc:
            metrics.PRUNE_FAILURES.inc()
            log.warning("prune pass: %s", exc)
        except Exception:
            metrics.PRUNE_FAILURES.inc()
            log.exception("prune pass failed")
