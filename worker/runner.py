"""Run one execution: claim it, run its graph under a lease, record what happened.

What the graph gets as input is chosen in ``worker/resume.py``; how its checkpoint writes
are fenced on the lease, in ``worker/fencing.py``; the lease itself is renewed from a
thread of its own (``worker/leases.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Any, Literal, Protocol, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Interrupt

from lg_deploy.core import logcontext
from lg_deploy.core.errors import BackendUnavailable, LeaseLost, NotFound
from lg_deploy.core.events import EventLog
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.jsonable import storable_text, to_jsonable
from lg_deploy.core.models import Execution, utcnow
from lg_deploy.core.platform.rollback import asked_for_rollback, delete_written_checkpoints
from lg_deploy.core.platform.runs import RunOptions
from lg_deploy.core.platform.temporary import delete_temporary_thread, deletes_its_thread
from lg_deploy.core.queue import Queue
from lg_deploy.core.states import Status
from lg_deploy.core.store import Outcome, Recorded, Store, Waiting
from lg_deploy.core.store.platform_base import PlatformStore
from lg_deploy.worker import metrics
from lg_deploy.worker.fencing import LeaseClock, fence, fenced
from lg_deploy.worker.platform_run import PlatformRun, run_platform
from lg_deploy.worker.resume import ResumeConflict, choose_input, graph_config
from lg_deploy.worker.retries import RetryPolicy

log = logging.getLogger("lg_deploy.worker")

Durability = Literal["sync", "async", "exit"]
# The key of a paused run's "updates" chunk (LangGraph keeps the constant private).
INTERRUPT = "__interrupt__"
# How long a worker without an execution's graph leaves it for one that has it.
UNKNOWN_GRAPH_RETRY_S = 1.0


class StopReason(StrEnum):
    """Why a running graph was stopped before it ended by itself."""

    LEASE_LOST = "lease_lost"
    CANCELLED = "cancelled"
    SHUTDOWN = "shutdown"
    # The database failed under the graph (its checkpointer): not the graph's fault.
    OUTAGE = "outage"
    # A checkpoint write failed for another reason: the attempt fails with that error.
    CHECKPOINT_FAILED = "checkpoint_failed"


# Attempts stopped for these reasons go back to the queue without using up an attempt.
HANDED_BACK = frozenset({StopReason.SHUTDOWN, StopReason.OUTAGE})


class Leases(Protocol):
    """Who keeps the leases of running attempts alive (``worker/leases.py``)."""

    def hold(self, execution_id: uuid.UUID, clock: LeaseClock) -> None: ...

    def release(self, execution_id: uuid.UUID) -> None: ...


@dataclass
class _Attempt:
    execution: Execution
    clock: LeaseClock
    task: asyncio.Task[Outcome] | None = None
    stop_reason: StopReason | None = None
    write_error: BaseException | None = None


@dataclass(frozen=True)
class Limits:
    """What the runner holds an execution to."""

    default_timeout_s: float = 3600.0
    # The largest result (output and interrupts, as JSON) an execution may store.
    max_output_bytes: int = 4 * 1024 * 1024
    # How long an execution whose graph this worker lacks waits for a worker that has it.
    unknown_graph_grace_s: float = 300.0


class Runner:
    """Runs executions for one worker; ``run`` is the queue's handler and never raises."""

    def __init__(
        self,
        store: Store,
        queue: Queue,
        registry: GraphRegistry,
        checkpointer: BaseCheckpointSaver,
        leases: Leases,
        *,
        owner: str,
        lease_s: float,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        durability: Durability = "sync",
        events: EventLog | None = None,
    ) -> None:
        """``events``: where the runs of the LangGraph Platform API stream their events."""
        self.store = store
        self.queue = queue
        self.registry = registry
        self.checkpointer = checkpointer
        # What the graphs write through: every write fenced on its attempt's lease.
        self.fenced_checkpointer = fenced(checkpointer)
        self.leases = leases
        self.owner = owner
        self.lease_s = lease_s
        self.limits = limits or Limits()
        self.retry = retry or RetryPolicy()
        self.durability = durability
        self.events = events
        self.attempts: dict[uuid.UUID, _Attempt] = {}

    async def run(self, execution_id: uuid.UUID) -> None:
        asked_at = time.monotonic()
        with logcontext.bound(execution_id=str(execution_id)):
            try:
                execution = await self.store.claim(execution_id, self.owner, self.lease_s)
            except BackendUnavailable as exc:
                # The reconciler delivers it again once the database is back.
                log.warning("cannot claim %s: %s", execution_id, exc)
                return
            if execution is None:
                metrics.UNCLAIMED.inc()
                return  # not QUEUED any more, or its thread is busy: someone else has it
            with logcontext.bound(
                graph_id=execution.graph_id,
                thread_id=execution.thread_id,
                attempt=execution.attempt,
                request_id=execution.request_id,
            ):
                if execution.graph_id not in self.registry:
                    await self._leave_for_another_worker(execution)
                else:
                    await self._attempt(execution, asked_at)

    async def _attempt(self, execution: Execution, asked_at: float) -> None:
        """Run the claimed ``execution`` under its lease and record how it ended."""
        execution_id, graph_id = execution.execution_id, execution.graph_id
        waited = (execution.updated_at - execution.queued_at).total_seconds()
        metrics.QUEUE_WAIT.labels(graph_id).observe(max(waited, 0.0))
        metrics.ATTEMPTS_STARTED.labels(graph_id).inc()
        log.info(
            "execution %s (graph %s) attempt %d started", execution_id, graph_id, execution.attempt
        )
        attempt = _Attempt(
            execution, LeaseClock(str(execution_id), execution.attempt, self.lease_s, asked_at)
        )
        attempt.task = task = asyncio.create_task(self._execute(attempt))
        self.attempts[execution_id] = attempt
        self.leases.hold(execution_id, attempt.clock)
        metrics.SLOTS_BUSY.inc()
        outcome: Outcome | None = None
        try:
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                # This handler itself was cancelled (the process is stopping): hand it back.
                attempt.stop_reason = attempt.stop_reason or StopReason.SHUTDOWN
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                await self._settle(attempt, None)
                raise
            # Otherwise the graph was stopped: lease lost, cancelled, shutdown, a write failed.
        except LeaseLost:
            attempt.stop_reason = StopReason.LEASE_LOST
        except BackendUnavailable as exc:
            log.warning("execution %s: the database failed under the graph: %s", execution_id, exc)
            attempt.stop_reason = StopReason.OUTAGE
        finally:
            self.leases.release(execution_id)
            self.attempts.pop(execution_id, None)
            metrics.SLOTS_BUSY.dec()
            metrics.ATTEMPT_SECONDS.labels(graph_id).observe(time.monotonic() - asked_at)
        if attempt.stop_reason is StopReason.CHECKPOINT_FAILED and attempt.write_error:
            outcome = _failure(execution, attempt.write_error)
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

    def lease_lost(self, execution_id: uuid.UUID) -> None:
        if self.stop(execution_id, StopReason.LEASE_LOST):
            log.warning("execution %s: lease lost; graph stopped", execution_id)

    def _checkpoint_write_failed(self, attempt: _Attempt, exc: BaseException) -> None:
        """The first refused or failed checkpoint write stops the attempt at once, whatever
        the durability mode: steps after it would run with their checkpoints lost."""
        if isinstance(exc, LeaseLost):
            reason = StopReason.LEASE_LOST
        elif isinstance(exc, BackendUnavailable):
            reason = StopReason.OUTAGE
        else:
            reason = StopReason.CHECKPOINT_FAILED
            attempt.write_error = attempt.write_error or exc
        eid = attempt.execution.execution_id
        if self.stop(eid, reason):
            log.warning("execution %s: a checkpoint write failed (%s): attempt stopped", eid, exc)

    async def _leave_for_another_worker(self, execution: Execution) -> None:
        """The execution's graph is not in this worker's langgraph.json (a rolling deploy):
        hand it back for a worker that has it, or fail it once none took it in time."""
        eid, graph_id = execution.execution_id, execution.graph_id
        waited = (utcnow() - execution.created_at).total_seconds()
        if waited > self.limits.unknown_graph_grace_s:
            error = {
                "type": "unknown_graph",
                "message": f"graph {graph_id!r} is not in this worker's langgraph.json "
                f"(it has {', '.join(sorted(self.registry.graphs))}), and no worker that has "
                f"it took the execution within {self.limits.unknown_graph_grace_s:g} s",
            }
            await self._record(execution, Outcome(Status.FAILED, error=error))
            return
        log.warning("execution %s: graph %r unknown here; left for another worker", eid, graph_id)
        try:
            if await self.store.release(eid, execution.attempt, UNKNOWN_GRAPH_RETRY_S):
                await self._enqueue(eid, execution.attempt, UNKNOWN_GRAPH_RETRY_S)
            else:
                await self.let_go(execution)  # cancelled meanwhile
        except BackendUnavailable as exc:
            log.warning("execution %s: cannot hand it back: %s", eid, exc)

    async def _settle(self, attempt: _Attempt, outcome: Outcome | None) -> None:
        """Write what the attempt ended with, fenced on its attempt number."""
        execution = attempt.execution
        eid, number = execution.execution_id, execution.attempt
        if outcome is None and attempt.stop_reason is not None:
            metrics.STOPPED.labels(execution.graph_id, attempt.stop_reason.value).inc()
        try:
            if attempt.stop_reason in HANDED_BACK:
                if await self.store.release(eid, number):
                    log.info("execution %s handed back to the queue", eid)
                    delay = self.retry.backoff_s if attempt.stop_reason == StopReason.OUTAGE else 0
                    await self._enqueue(eid, number, delay)
                else:
                    await self.let_go(execution)  # cancelled meanwhile
                return
            if outcome is None:
                log.info("execution %s attempt %d stopped: %s", eid, number, attempt.stop_reason)
                await self.let_go(execution)
                return
            if await self._retry(execution, outcome):
                return  # the thread waits for this execution's next attempt
            if (recorded := await self._record(execution, outcome)) is None:
                await self.let_go(execution)  # the result was refused: cancelled meanwhile?
            elif recorded.next_on_thread is not None:
                await self.reenqueue(recorded.next_on_thread)
        except BackendUnavailable as exc:
            # Whatever was not written, the lease expires and the reconciler runs it again
            # (or, for a cancelled execution, lets go of it).
            log.warning("execution %s: cannot record the result: %s", eid, exc)

    async def let_go(self, execution: Execution) -> None:
        """This attempt's graph has stopped (or its worker died, for the reconciler): if
        the execution was cancelled meanwhile, clear its lease so its thread runs the next
        execution, and enqueue that one. A platform run cancelled with ``rollback`` is
        rolled back first. An attempt that was taken over instead leaves the thread to
        the attempt that took it."""
        eid = execution.execution_id
        rolled_back: int | None = None
        if RunOptions.of(execution) is not None:
            rolled_back = await self._roll_back_if_asked(execution)
        recorded = await self.store.let_go(eid, execution.attempt, delete=rolled_back is not None)
        if recorded is None:
            return
        if rolled_back is not None:
            log.info("run %s rolled back: %d checkpoints deleted", eid, rolled_back)
        else:
            log.info("execution %s cancelled: its graph has stopped; thread let go", eid)
        await self._delete_temporary_thread(execution)
        with contextlib.suppress(BackendUnavailable):  # only wakes long polls sooner
            await self.queue.publish("settled", eid)
        if recorded.next_on_thread is not None:
            await self.reenqueue(recorded.next_on_thread)

    async def _delete_temporary_thread(self, execution: Execution) -> None:
        """A threadless run is over: delete its temporary thread (core/platform/temporary.py).
        Best effort: the reconciler's sweep deletes what is left behind."""
        if not deletes_its_thread(execution):
            return
        store = cast(PlatformStore, self.store)
        try:
            await delete_temporary_thread(store, self.checkpointer, execution.thread_id)
        except BackendUnavailable as exc:
            log.warning(
                "execution %s: cannot delete its temporary thread: %s", execution.execution_id, exc
            )
        except Exception:
            log.exception(
                "execution %s: cannot delete its temporary thread", execution.execution_id
            )

    async def _roll_back_if_asked(self, execution: Execution) -> int | None:
        """Delete the checkpoints of a run cancelled with ``rollback`` that this attempt
        still holds; how many (None when no rollback is due)."""
        try:
            current = await self.store.get(execution.execution_id)
        except NotFound:
            return None
        held = current.attempt == execution.attempt and current.lease_owner is not None
        if current.status is not Status.CANCELLED or not held:
            return None
        if not asked_for_rollback(current):
            return None
        store = cast(PlatformStore, self.store)
        return await delete_written_checkpoints(
            current, store=store, checkpointer=self.checkpointer
        )

    async def _record(self, execution: Execution, outcome: Outcome) -> Recorded | None:
        """Finish the attempt with ``outcome``; None when it no longer held the execution."""
        eid, number = execution.execution_id, execution.attempt
        try:
            recorded = await self.store.finish(eid, number, outcome)
        except BackendUnavailable:
            raise
        except Exception as exc:
            # The database refused the result itself: record that instead of retrying the
            # same write forever.
            log.exception("execution %s: the store refused the result", eid)
            outcome = Outcome(
                Status.FAILED,
                error={
                    "type": "unstorable_result",
                    "message": storable_text(f"{type(exc).__name__}: {exc}")[:2000],
                },
            )
            recorded = await self.store.finish(eid, number, outcome)
        if not recorded:
            log.warning(
                "execution %s attempt %d finished as %s but lost its lease: result dropped",
                eid,
                number,
                outcome.status,
            )
            return None
        log.info("execution %s attempt %d %s", eid, number, outcome.status)
        if outcome.status is not Status.COMPLETED:  # on success, worker/platform_run.py
            await self._delete_temporary_thread(execution)
        metrics.FINISHED.labels(execution.graph_id, outcome.status.value).inc()
        if outcome.status is Status.FAILED and outcome.error is not None:
            metrics.FAILED.labels(execution.graph_id, outcome.error["type"]).inc()
        with contextlib.suppress(BackendUnavailable):  # only wakes long polls sooner
            await self.queue.publish("settled", eid)
        return recorded

    async def reenqueue(self, waiting: Waiting) -> None:
        """Enqueue a QUEUED execution for its current attempt, after its not-before time."""
        await self.queue.enqueue(
            waiting.execution_id, attempt=waiting.attempt, delay_s=delay_until(waiting)
        )

    async def _retry(self, execution: Execution, outcome: Outcome) -> bool:
        """Queue a retryable failure again while attempts remain; True when the outcome
        is dealt with (retried, or refused because the attempt no longer holds it)."""
        if outcome.status is not Status.FAILED or outcome.error is None:
            return False
        if not self.retry.is_retryable(outcome.error["type"], outcome.cause):
            return False
        used = execution.attempts_used
        if used >= execution.max_attempts:
            return False
        delay = self.retry.delay_s(used)
        eid, number = execution.execution_id, execution.attempt
        if not await self.store.retry(eid, number, outcome.error, delay):
            await self.let_go(execution)  # cancelled meanwhile
            return True
        metrics.RETRIED.labels(execution.graph_id).inc()
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

    async def _execute(self, attempt: _Attempt) -> Outcome:
        """Run the graph once and say how it ended; exceptions become FAILED outcomes."""
        execution = attempt.execution
        timeout_s = execution.timeout_s or self.limits.default_timeout_s
        deadline = asyncio.timeout(timeout_s)
        on_write_failure = partial(self._checkpoint_write_failed, attempt)
        try:
            with fence(attempt.clock, on_write_failure):
                async with deadline:
                    return await self._invoke(execution, attempt.clock)
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

    async def _invoke(self, execution: Execution, clock: LeaseClock) -> Outcome:
        config = graph_config(execution)
        checkpointer = self.fenced_checkpointer
        graph = await self.registry.build(execution.graph_id, config, checkpointer)
        durability = cast(
            Durability,
            execution.durability
            or self.registry.graphs[execution.graph_id].durability
            or self.durability,
        )
        if (options := RunOptions.of(execution)) is not None:  # a platform run
            return await run_platform(
                PlatformRun(graph, config, execution, options, checkpointer, clock.held),
                store=cast(PlatformStore, self.store),
                events=self.events,
                durability=durability,
                max_output_bytes=self.limits.max_output_bytes,
            )
        graph_input = await choose_input(graph, config, execution)
        if isinstance(graph_input, ResumeConflict):
            return Outcome(Status.FAILED, error=graph_input.error)
        # The run's own stream says whether it paused (an "__interrupt__" update, empty for a
        # static breakpoint), so the state need not be read again once it ends.
        result: Any = None
        paused: dict[str, Interrupt] | None = None
        async for mode, chunk in graph.astream(
            graph_input, config, stream_mode=["updates", "values"], durability=durability
        ):
            if isinstance(chunk, dict) and INTERRUPT in chunk:
                paused = (paused or {}) | {i.id: i for i in chunk[INTERRUPT]}
                chunk = {k: v for k, v in chunk.items() if k != INTERRUPT} or None
            if mode == "values" and chunk is not None:
                result = chunk
        output = to_jsonable(result)
        interrupts = None
        if paused is not None:
            interrupts = [{"id": i.id, "value": to_jsonable(i.value)} for i in paused.values()]
        size = len(json.dumps([output, interrupts], separators=(",", ":")).encode())
        if size > self.limits.max_output_bytes:
            return Outcome(
                Status.FAILED,
                error={
                    "type": "output_too_large",
                    "message": f"the result is {size} bytes of JSON, over the limit of "
                    f"{self.limits.max_output_bytes} (LG_DEPLOY_MAX_OUTPUT_BYTES)",
                },
            )
        if interrupts is not None:
            return Outcome(Status.INTERRUPTED, output=output, interrupts=interrupts)
        return Outcome(Status.COMPLETED, output=output)


def delay_until(waiting: Waiting) -> float:
    """Seconds until a waiting execution may run (a retry's backoff)."""
    if waiting.not_before is None:
        return 0.0
    return max((waiting.not_before - utcnow()).total_seconds(), 0.0)


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
