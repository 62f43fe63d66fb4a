"""Creating, finding and stopping runs, and the streaming answers they get: what the
routes of ``runs.py`` share, for one request at a time.

A run is an execution (``core/models.py``): created here like ``POST /execute`` creates
one (the row committed first, then its id enqueued), claimed and run by a worker with every
guarantee of the fleet, with the platform's options kept on it (``core/platform/runs.py``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, Request, Response
from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.api import metrics
from lg_deploy.api.deps import QueueDep, RegistryDep, SettingsDep, WaitersDep
from lg_deploy.api.platform.assistants import find_assistant
from lg_deploy.api.platform.control import CancelAction, cancel_run
from lg_deploy.api.platform.deps import CheckpointerDep, EventsDep, PlatformStoreDep
from lg_deploy.api.platform.schemas import RunCreate
from lg_deploy.api.platform.streams import RunStreamResponse, Streams
from lg_deploy.api.waiting import Waiters
from lg_deploy.core.errors import BackendUnavailable, NotFound, QueueFull
from lg_deploy.core.events import METADATA, EventLog, NewEvent
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.models import Assistant, Execution, Thread, utcnow
from lg_deploy.core.platform.assistants import merge_config
from lg_deploy.core.platform.errors import BadRequest
from lg_deploy.core.platform.runs import RunOptions
from lg_deploy.core.platform.statuses import is_active
from lg_deploy.core.queue import Queue
from lg_deploy.core.settings import Settings
from lg_deploy.core.states import Status
from lg_deploy.core.store.platform_base import PlatformStore

log = logging.getLogger("lg_deploy.api")

# RunnableConfig keys a run may set; the rest (callbacks, run_id, ...) are the worker's.
CONFIG_KEYS = ("configurable", "metadata", "tags", "recursion_limit", "max_concurrency", "run_name")
RESERVED_CONFIGURABLE = ("thread_id", "checkpoint_id", "checkpoint_ns", "checkpoint_map")


class Runs:
    """What creating, finding and stopping runs needs, for one request."""

    def __init__(
        self,
        request: Request,
        store: PlatformStore,
        queue: Queue,
        events: EventLog,
        checkpointer: BaseCheckpointSaver,
        registry: GraphRegistry,
        settings: Settings,
        waiters: Waiters,
    ) -> None:
        self.request = request
        self.store = store
        self.queue = queue
        self.events = events
        self.checkpointer = checkpointer
        self.registry = registry
        self.settings = settings
        self.streams = Streams(store, events, waiters, settings.stream_heartbeat_s)

    async def create(self, body: RunCreate, thread_id: str | None) -> Execution:
        """Check the whole request, then write: a refused request leaves no thread behind
        and changes none (docs/architecture.md, invariant 7)."""
        assistant = await find_assistant(self.store, self.registry, body.assistant_id)
        if assistant.graph_id not in self.registry:
            raise NotFound("graph", assistant.graph_id)
        await self._check_backpressure()
        stateless = thread_id is None
        graph_meta = {"graph_id": assistant.graph_id, "assistant_id": str(assistant.assistant_id)}
        new_thread: Thread | None = None
        if stateless:
            if body.command is not None and body.command.resume is not None:
                raise BadRequest("You must provide a thread_id when resuming.")
            new_thread = Thread(thread_id=str(uuid.uuid4()), meta=graph_meta)
            thread_id = new_thread.thread_id
        else:
            assert thread_id is not None
            try:
                await self.store.get_thread(thread_id)
            except NotFound:
                if body.if_not_exists != "create":
                    raise NotFound("thread", thread_id) from None
                new_thread = Thread(thread_id=thread_id, meta=graph_meta)
        execution = self._execution(body, assistant, thread_id, stateless)
        # Nothing was written so far.
        if new_thread is not None:
            await self.store.create_thread(new_thread, "raise" if stateless else "do_nothing")
        try:
            execution = await self._insert(execution, body.multitask_strategy or "enqueue")
        except BaseException:
            if stateless:  # its temporary thread would never be deleted
                with contextlib.suppress(Exception):
                    await self.store.delete_thread(thread_id)
            raise
        if not stateless:
            await self.store.update_thread_metadata(thread_id, graph_meta)
        eid = execution.execution_id
        metrics.SUBMITTED.labels(execution.graph_id).inc()
        # The stream's first event, before any worker can add one.
        with contextlib.suppress(BackendUnavailable):
            first = json.dumps({"run_id": str(eid), "attempt": 1})
            await self.events.append(eid, [NewEvent(METADATA, first)])
        try:
            await self.queue.enqueue(eid, delay_s=body.after_seconds or 0)
        except BackendUnavailable as exc:  # the reconciler enqueues it once the queue is back
            log.warning("run %s accepted; enqueue deferred: %s", eid, exc)
        return execution

    async def _insert(self, execution: Execution, strategy: str) -> Execution:
        """Write the run, after stopping the thread's active runs for the interrupt and
        rollback strategies; ``ThreadBusy`` with reject while one is active."""
        if strategy in ("interrupt", "rollback"):
            action: CancelAction = "rollback" if strategy == "rollback" else "interrupt"
            for running in await self.store.active_runs(thread_id=execution.thread_id):
                await self.cancel(running, action)
        created, _ = await self.store.create(execution, reject_if_thread_busy=strategy == "reject")
        return created

    def _execution(
        self, body: RunCreate, assistant: Assistant, thread_id: str, stateless: bool
    ) -> Execution:
        run_id = new_execution_id()
        given = body.run_config()
        if (given.get("configurable") or {}) and body.context:
            raise BadRequest(
                "Cannot specify both configurable and context. Prefer setting context alone."
            )
        config = merge_config(
            assistant.config, {k: v for k, v in given.items() if k in CONFIG_KEYS}
        )
        configurable = {
            k: v
            for k, v in (config.get("configurable") or {}).items()
            if k not in RESERVED_CONFIGURABLE and not k.startswith("__")
        }
        ids = {
            "run_id": str(run_id),
            "assistant_id": str(assistant.assistant_id),
            "graph_id": assistant.graph_id,
        }
        config["configurable"] = {**configurable, **ids}
        config["metadata"] = {
            **(config.get("metadata") or {}),
            **(body.metadata or {}),
            **ids,
            "thread_id": thread_id,
        }
        context = {**assistant.context, **(body.context or {})} or None
        kwargs = {
            "command": body.command.model_dump(exclude_none=True) if body.command else None,
            "config": config,
            "context": context,
            "stream_mode": body.stream_mode,
            "interrupt_before": body.interrupt_before,
            "interrupt_after": body.interrupt_after,
            "webhook": body.webhook,
            "feedback_keys": body.feedback_keys,
            "temporary": stateless,
            "subgraphs": body.stream_subgraphs,
            "resumable": body.stream_resumable,
            "checkpoint_during": True if body.checkpoint_during is None else body.checkpoint_during,
            "durability": body.durability,
            "checkpoint_id": body.checkpoint_id,
            "checkpoint": body.checkpoint,
            "after_seconds": body.after_seconds,
        }
        options = RunOptions(
            kwargs=kwargs,
            multitask_strategy=body.multitask_strategy or "enqueue",
            on_completion=(body.on_completion or "delete") if stateless else body.on_completion,
            on_disconnect=body.on_disconnect,
        )
        not_before = None
        if body.after_seconds:
            not_before = utcnow() + timedelta(seconds=body.after_seconds)
        retention = self.settings.retention_policy(self.registry).resolve(assistant.graph_id)
        return Execution(
            retention_s=retention.finished_s,
            interrupted_retention_s=retention.interrupted_s,
            execution_id=run_id,
            graph_id=assistant.graph_id,
            thread_id=thread_id,
            input=body.input,
            config=config,
            meta=body.metadata or {},
            max_attempts=self.settings.max_attempts,
            request_id=getattr(self.request.state, "request_id", None),
            not_before=not_before,
            assistant_id=assistant.assistant_id,
            platform=options.stored(),
        )

    async def _check_backpressure(self) -> None:
        limit = self.settings.max_queue_depth
        if limit <= 0:
            return
        try:
            depth = await self.queue.depth()
        except BackendUnavailable:
            depth = (await self.store.count_by_status([Status.QUEUED]))[Status.QUEUED]
        if depth >= limit:
            raise QueueFull(depth, limit)

    async def find(self, thread_id: str, run_id: str) -> Execution:
        try:
            execution = await self.store.get(uuid.UUID(run_id))
        except ValueError:
            raise NotFound("run", run_id) from None
        if execution.thread_id != thread_id:
            raise NotFound("run", run_id)
        return execution

    async def cancel(self, execution: Execution, action: CancelAction) -> bool:
        return await cancel_run(
            execution,
            action,
            store=self.store,
            queue=self.queue,
            events=self.events,
            checkpointer=self.checkpointer,
        )

    def on_disconnect(
        self, execution: Execution, wanted: bool
    ) -> Callable[[], Awaitable[None]] | None:
        """What to do when the client leaves before the end: cancel the run, if asked."""
        if not wanted:
            return None

        async def cancel() -> None:
            try:
                current = await self.store.get(execution.execution_id)
            except NotFound:
                return
            if is_active(current.status):
                log.info(
                    "run %s: its client went away; cancelled (on_disconnect)",
                    execution.execution_id,
                )
                await self.cancel(current, "interrupt")

        return cancel

    def stream_response(
        self,
        execution: Execution,
        *,
        after: str,
        modes: set[str] | None,
        cancel_on_disconnect: bool,
    ) -> Response:
        tid, rid = execution.thread_id, execution.execution_id
        return RunStreamResponse(
            self.streams.sse(rid, after=after, modes=modes),
            media_type="text/event-stream",
            headers={
                "Location": f"/threads/{tid}/runs/{rid}/stream",
                "Content-Location": f"/threads/{tid}/runs/{rid}",
                "Cache-Control": "no-store",
            },
            on_disconnect=self.on_disconnect(execution, cancel_on_disconnect),
        )

    def wait_response(self, execution: Execution, *, cancel_on_disconnect: bool) -> Response:
        tid, rid = execution.thread_id, execution.execution_id
        return RunStreamResponse(
            self.streams.wait_body(rid, tid),
            media_type="application/json",
            headers={
                "Location": f"/threads/{tid}/runs/{rid}/join",
                "Content-Location": f"/threads/{tid}/runs/{rid}",
            },
            on_disconnect=self.on_disconnect(execution, cancel_on_disconnect),
        )


async def get_runs(
    request: Request,
    store: PlatformStoreDep,
    queue: QueueDep,
    events: EventsDep,
    checkpointer: CheckpointerDep,
    registry: RegistryDep,
    settings: SettingsDep,
    waiters: WaitersDep,
) -> Runs:
    return Runs(request, store, queue, events, checkpointer, registry, settings, waiters)


RunsDep = Annotated[Runs, Depends(get_runs)]
