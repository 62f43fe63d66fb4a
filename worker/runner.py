"""Run one execution: claim it, run its graph under a lease, record what happened.

What the graph gets as input is chosen in ``worker/resume.py``; how its checkpoint writes
are fenced on the lease, in ``worker/fencing.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from enum import StrEnum

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core.errors import BackendUnavailable, LeaseLost
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.jsonable import storable_text, to_jsonable
from lg_deploy.core.models import Execution, utcnow
from lg_deploy.core.queue import Queue
from lg_deploy.core.states import Status
from lg_deploy.core.store import Outcome, Store, Waiting
from lg_deploy.worker import metrics
from lg_deploy.worker.fencing import LeaseClock, fenced
from lg_deploy.worker.resume import ResumeConflict, choose_input, graph_config

log = logging.getLogger("lg_deploy.worker")


class StopReason(StrEnum):
    """Why a running graph was stopped before it ended by itself."""

    LEASE_LOST = "lease lost"
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"
    # The database failed under the graph (its checkpointer): not the graph's fault.
    OUTAGE = "database outage"


# Attempts stopped for these reasons go back to the queue without using up an attempt.
HANDED_BACK = frozenset({StopReason.SHUTDOWN, StopReason.OUTAGE})


@dataclass(frozen=True)
class RetryPolicy:
    """Which failures are retried, and how long to wait before attempt n + 1."""

    retry_on: frozenset[str] = frozenset()
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0

    def is_retryable(self, error_type: str, exc: BaseException | None) -> bool:
        """The operator listed the error type, or the graph marked the exception
        (an attribute ``retryable = True``)."""
        return error_type in self.retry_on or bool(getattr(exc, "retryable", False))

    def delay_s(self, attempts_used: int) -> float:
        return min(self.backoff_s * 2 ** max(attempts_used - 1, 0), self.backoff_max_s)


@dataclass
class _Attempt:
    execution: Execution
    clock: LeaseClock
    task: asyncio.Task[Outcome] | None = None
    stop_reason: StopReason | None = None


class Runner:
    """Runs executions for one worker; ``run`` is the queue's handler and never raises."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        registry: GraphRegistry,
        checkpointer: BaseCheckpointSaver,
        *,
        owner: str,
        lease_s: float,
        default_timeout_s: float,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.queue = queue
        self.registry = registry
        self.checkpointer = checkpointer
        self.owner = owner
        self.lease_s = lease_s
        self.default_timeout_s = default_timeout_s
        self.retry = retry or RetryPolicy()
        self.attempts: dict[uuid.UUID, _Attempt] = {}

    async def run(self, execution_id: uuid.UUID) -> None:
        asked_at = time.monotonic()
        try:
            execution = await self.store.claim(execution_id, self.owner, self.lease_s)
        except BackendUnavailable as exc:
            # The reconciler delivers it again once the database is back.
            log.warning("cannot claim %s: %s", execution_id, exc)
            return
        if execution is None:
            return  # not QUEUED any more, or its thread is busy: someone else has it
        log.info(
            "execution %s (graph %s) attempt %d started",
            execution_id,
            execution.graph_id,
            execution.attempt,
        )
        attempt = _Attempt(
            execution, LeaseClock(str(execution_id), execution.attempt, self.lease_s, asked_at)
        )
        attempt.task = task = asyncio.create_task(self._execute(attempt))
        self.attempts[execution_id] = attempt
        metrics.RUNNING.inc()
        heartbeat = asyncio.create_task(self._heartbeat(attempt))
        outcome: Outcome | None = None
        try:
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is None or not current.cancelling():
                pass  # the graph was stopped (lease lost, cancelled, shutdown)
            else:
                # This handler itself was cancelled (the process is stopping): hand it back.
                attempt.stop_reason = attempt.stop_reason or StopReason.SHUTDOWN
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await self._settle(attempt, None)
                raise
        except LeaseLost:
            attempt.stop_reason = StopReason.LEASE_LOST
        except BackendUnavailable as exc:
            log.warning("execution %s: the database failed under the graph: %s", execution_id, exc)
            attempt.stop_reason = StopReason.OUTAGE
        finally:
            heartbeat.cancel()
            self.attempts.pop(execution_id, None)
            metrics.RUNNING.dec()
            metrics.ATTEMPT_SECONDS.labels(execution.graph_id).observe(time.monotonic() - asked_at)
        await self._settle(attempt, outcome)

    def stop(self, execution_id: uuid.UUID, reason: StopReason) -> bool:
        """Stop the graph of ``execution_id`` if it runs here; True when it did."""
        attempt = self.attempts.get(execution_id)
        if attempt is None or attempt.task is None or attempt.task.done():
            return False
        attempt.stop_reason = attempt.stop_reason or reason
        attempt.task.cancel()
        return True

    def stop_all(self, reason: StopReason) -> None:
        for execution_id in list(self.attempts):
            self.stop(execution_id, reason)

    async def _settle(self, attempt: _Attempt, outcome: Outcome | None) -> None:
        """Write what the attempt ended with, fenced on its attempt number."""
        execution = attempt.execution
        eid, number = execution.execution_id, execution.attempt
        ended = _ended_as(attempt, outcome)
        metrics.ATTEMPTS_FINISHED.labels(execution.graph_id, ended).inc()
        try:
            if attempt.stop_reason in HANDED_BACK:
                if await self.store.release(eid, number):
                    log.info("execution %s handed back to the queue", eid)
                    delay = self.retry.backoff_s if attempt.stop_reason == StopReason.OUTAGE else 0
                    await self._enqueue(eid, number, delay)
                return
            if outcome is None:
                log.info("execution %s attempt %d stopped: %s", eid, number, attempt.stop_reason)
            elif not await self._retry(execution, outcome):
                await self._record(execution, outcome)
            waiting = await self.store.next_queued_on_thread(execution.thread_id)
            if waiting is not None:
                await self.reenqueue(waiting)
        except BackendUnavailable as exc:
            # Whatever was not written, the lease expires and the reconciler runs it again.
            log.warning("execution %s: cannot record the result: %s", eid, exc)

    async def _record(self, execution: Execution, outcome: Outcome) -> None:
        eid, number = execution.execution_id, execution.attempt
        try:
            recorded = await self.store.finish(eid, number, outcome)
        except BackendUnavailable:
            raise
        except Exception as exc:
            # The database refused the result itself: record that instead of retrying the
            # same write forever.
            log.exception("execution %s: the store refused the result", eid)
            unstorable = {
                "type": "unstorable_result",
                "message": storable_text(f"{type(exc).__name__}: {exc}")[:2000],
            }
            recorded = await self.store.finish(
                eid, number, Outcome(Status.FAILED, error=unstorable)
            )
        if recorded:
            log.info("execution %s attempt %d %s", eid, number, outcome.status)
        else:
            log.warning(
                "execution %s attempt %d finished as %s but lost its lease: result dropped",
                eid,
                number,
                outcome.status,
            )

    async def reenqueue(self, waiting: Waiting, *, revive: bool = False) -> None:
        """Enqueue a QUEUED execution for its current attempt, after its not-before time."""
        delay = 0.0
        if waiting.not_before is not None:
            delay = max((waiting.not_before - utcnow()).total_seconds(), 0.0)
        await self.queue.enqueue(
            waiting.execution_id, attempt=waiting.attempt, delay_s=delay, revive=revive
        )

    async def _retry(self, execution: Execution, outcome: Outcome) -> bool:
        """Queue a retryable failure again while attempts remain; True when it did."""
        if outcome.status is not Status.FAILED or outcome.error is None:
            return False
        if not self.retry.is_retryable(outcome.error["type"], outcome.cause):
            return False
        used = execution.attempts_used
        if used >= execution.max_attempts:
            return False
        delay = self.retry.delay_s(used)
        eid, number = execution.execution_id, execution.attempt
        if await self.store.retry(eid, number, outcome.error, delay):
            log.info(
                "execution %s attempt %d failed (%s); retry %d of %d in %.1f s",
                eid,
                number,
                outcome.error["type"],
                used + 1,
                execution.max_attempts,
                delay,
            )
            await self._enqueue(eid, number, delay)
        return True

    async def _enqueue(self, execution_id: uuid.UUID, attempt: int, delay_s: float) -> None:
        """Best effort: when the queue fails, the reconciler enqueues it later."""
        try:
            await self.queue.enqueue(execution_id, attempt=attempt, delay_s=delay_s)
        except BackendUnavailable as exc:
            log.warning("execution %s: cannot enqueue it now: %s", execution_id, exc)

    async def _heartbeat(self, attempt: _Attempt) -> None:
        """Renew the lease every third of its length; stop the graph when it is lost."""
        execution, clock = attempt.execution, attempt.clock
        interval = self.lease_s / 3
        while attempt.task is not None and not attempt.task.done():
            await asyncio.sleep(interval)
            asked_at = time.monotonic()
            try:
                if await self.store.heartbeat(
                    execution.execution_id, execution.attempt, self.lease_s
                ):
                    clock.renewed(asked_at)
                else:
                    clock.lost = True
            except BackendUnavailable as exc:
                log.warning("execution %s: heartbeat failed: %s", execution.execution_id, exc)
            if not clock.held():
                self.stop(execution.execution_id, StopReason.LEASE_LOST)
                return

    async def _execute(self, attempt: _Attempt) -> Outcome:
        """Run the graph once and say how it ended; exceptions become FAILED outcomes."""
        execution = attempt.execution
        timeout_s = execution.timeout_s or self.default_timeout_s
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                return await self._invoke(execution, fenced(self.checkpointer, attempt.clock))
        except TimeoutError as exc:
            if deadline.expired():
                return Outcome(
                    Status.FAILED,
                    error={
                        "type": "timeout",
                        "message": f"the execution ran past its time limit of {timeout_s:g} s",
                    },
                )
            return _failure(execution, exc)
        except (LeaseLost, BackendUnavailable):
            raise  # not the graph's failure: see worker/fencing.py
        except Exception as exc:
            return _failure(execution, exc)

    async def _invoke(self, execution: Execution, checkpointer: BaseCheckpointSaver) -> Outcome:
        config = graph_config(execution)
        graph = await self.registry.build(execution.graph_id, config, checkpointer)
        graph_input = await choose_input(graph, config, execution)
        if isinstance(graph_input, ResumeConflict):
            return Outcome(Status.FAILED, error=graph_input.error)
        result = await graph.ainvoke(graph_input, config)
        snapshot = await graph.aget_state(config)
        output = to_jsonable(
            {k: v for k, v in result.items() if k != "__interrupt__"}
            if isinstance(result, dict)
            else result
        )
        if snapshot.next:
            interrupts = [{"id": i.id, "value": to_jsonable(i.value)} for i in snapshot.interrupts]
            return Outcome(Status.INTERRUPTED, output=output, interrupts=interrupts)
        return Outcome(Status.COMPLETED, output=output)


def _ended_as(attempt: _Attempt, outcome: Outcome | None) -> str:
    if attempt.stop_reason in HANDED_BACK:
        return "handed_back"
    if outcome is None:
        return "stopped"
    return outcome.status.value


def _failure(execution: Execution, exc: BaseException) -> Outcome:
    log.warning(
        "execution %s attempt %d failed: %s: %s",
        execution.execution_id,
        execution.attempt,
        type(exc).__name__,
        exc,
        exc_info=exc,
    )
    return Outcome(
        Status.FAILED,
        error={"type": type(exc).__name__, "message": storable_text(str(exc))},
        traceback=storable_text("".join(traceback.format_exception(exc))),
        cause=exc,
    )
