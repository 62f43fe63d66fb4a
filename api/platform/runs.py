"""``/threads/{thread_id}/runs`` and ``/runs``: runs of an assistant on a thread, or on a
thread of their own (threadless), in the background, streamed over SSE or waited for.

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
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.api import metrics
from lg_deploy.api.deps import QueueDep, RegistryDep, SettingsDep, WaitersDep
from lg_deploy.api.platform.assistants import find_assistant
from lg_deploy.api.platform.control import CancelAction, cancel_run
from lg_deploy.api.platform.deps import CheckpointerDep, EventsDep, PlatformStoreDep
from lg_deploy.api.platform.errors import PlatformRoute, responses
from lg_deploy.api.platform.render import json_response, run_json, selected
from lg_deploy.api.platform.schemas import RunCreate, RunsCancel
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
from lg_deploy.core.platform.statuses import RunStatus, execution_statuses, is_active
from lg_deploy.core.queue import Queue
from lg_deploy.core.settings import Settings
from lg_deploy.core.states import Status
from lg_deploy.core.store.platform_base import PlatformStore

log = logging.getLogger("lg_deploy.api")

router = APIRouter(tags=["runs"], route_class=PlatformRoute)

SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}
}
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
        assistant = await find_assistant(self.store, self.registry, body.assistant_id)
        if assistant.graph_id not in self.registry:
            raise NotFound("graph", assistant.graph_id)
        await self._check_backpressure()
        stateless = thread_id is None
        graph_meta = {"graph_id": assistant.graph_id, "assistant_id": str(assistant.assistant_id)}
        if stateless:
            if body.command is not None and body.command.resume is not None:
                raise BadRequest("You must provide a thread_id when resuming.")
            thread_id = str(uuid.uuid4())
            await self.store.create_thread(Thread(thread_id=thread_id, meta=graph_meta), "raise")
        else:
            assert thread_id is not None
            try:
                await self.store.get_thread(thread_id)
            except NotFound:
                if body.if_not_exists != "create":
                    raise NotFound("thread", thread_id) from None
                await self.store.create_thread(Thread(thread_id=thread_id), "do_nothing")
            await self.store.update_thread_metadata(thread_id, graph_meta)
        execution = self._execution(body, assistant, thread_id, stateless)
        strategy = body.multitask_strategy or "enqueue"
        if strategy in ("interrupt", "rollback"):
            action: CancelAction = "rollback" if strategy == "rollback" else "interrupt"
            for running in await self.store.active_runs(thread_id=thread_id):
                await self.cancel(running, action)
        execution, _ = await self.store.create(
            execution, reject_if_thread_busy=strategy == "reject"
        )
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

    def _execution(
        self, body: RunCreate, assistant: Assistant, thread_id: str, stateless: bool
    ) -> Execution:
        run_id = new_execution_id()
        given = body.config or {}
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
        return Execution(
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
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID")]


def _created(execution: Execution, *, stateless: bool) -> Response:
    location = (
        f"/runs/{execution.execution_id}"
        if stateless
        else f"/threads/{execution.thread_id}/runs/{execution.execution_id}"
    )
    return json_response(run_json(execution), headers={"Content-Location": location})


# Runs on a thread


@router.post(
    "/threads/{thread_id}/runs",
    responses=responses(400, 404, 409, 422, 429),
    summary="Create a run in the background",
)
async def create_run(thread_id: str, body: RunCreate, runs: RunsDep) -> Response:
    return _created(await runs.create(body, thread_id), stateless=False)


@router.post(
    "/threads/{thread_id}/runs/stream",
    responses={**SSE, **responses(400, 404, 409, 422, 429)},
    summary="Create a run and stream its events",
)
async def stream_run(thread_id: str, body: RunCreate, runs: RunsDep) -> Response:
    execution = await runs.create(body, thread_id)
    return runs.stream_response(
        execution, after="0-0", modes=None, cancel_on_disconnect=body.on_disconnect == "cancel"
    )


@router.post(
    "/threads/{thread_id}/runs/wait",
    responses=responses(400, 404, 409, 422, 429),
    summary="Create a run and wait for its final values",
)
async def wait_run(thread_id: str, body: RunCreate, runs: RunsDep) -> Response:
    execution = await runs.create(body, thread_id)
    return runs.wait_response(execution, cancel_on_disconnect=body.on_disconnect == "cancel")


@router.get(
    "/threads/{thread_id}/runs", responses=responses(404, 422), summary="List a thread's runs"
)
async def list_runs(
    thread_id: str,
    runs: RunsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0)] = 0,
    status: Annotated[RunStatus | None, Query()] = None,
    select: Annotated[list[str] | None, Query()] = None,
) -> Response:
    await runs.store.get_thread(thread_id)
    statuses, timeout = execution_statuses(status) if status else (None, None)
    found = await runs.store.runs_of_thread(
        thread_id, statuses=statuses, timeout=timeout, limit=limit, offset=offset
    )
    return json_response([selected(run_json(e), select) for e in found])


@router.get("/threads/{thread_id}/runs/{run_id}", responses=responses(404), summary="Get a run")
async def get_run(thread_id: str, run_id: str, runs: RunsDep) -> Response:
    return json_response(run_json(await runs.find(thread_id, run_id)))


@router.delete(
    "/threads/{thread_id}/runs/{run_id}",
    status_code=204,
    responses=responses(404, 409),
    summary="Delete a finished run",
)
async def delete_run(thread_id: str, run_id: str, runs: RunsDep) -> Response:
    execution = await runs.find(thread_id, run_id)
    await runs.store.delete(execution.execution_id)
    return Response(status_code=204)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/join",
    responses=responses(404),
    summary="Wait for a run's final values",
)
async def join_run(
    thread_id: str, run_id: str, runs: RunsDep, cancel_on_disconnect: bool = False
) -> Response:
    execution = await runs.find(thread_id, run_id)
    return runs.wait_response(execution, cancel_on_disconnect=cancel_on_disconnect)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    responses={**SSE, **responses(404, 422)},
    summary="Stream a run's events: from now, or after Last-Event-ID",
)
async def join_run_stream(
    thread_id: str,
    run_id: str,
    runs: RunsDep,
    last_event_id: LastEventId = None,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    cancel_on_disconnect: bool = False,
) -> Response:
    execution = await runs.find(thread_id, run_id)
    modes = {m for m in stream_mode or () if m} or None
    if modes and modes & {"messages", "messages-tuple"}:
        modes |= {"messages", "messages-tuple"}  # one family: either asks for the tokens
    after = await runs.streams.start_of(execution.execution_id, last_event_id, live=True)
    return runs.stream_response(
        execution, after=after, modes=modes, cancel_on_disconnect=cancel_on_disconnect
    )


@router.post(
    "/threads/{thread_id}/runs/{run_id}/cancel",
    status_code=202,
    responses=responses(404),
    summary="Cancel a pending or running run (interrupt, or rollback)",
)
async def cancel(
    thread_id: str,
    run_id: str,
    runs: RunsDep,
    wait: Annotated[bool, Query()] = False,
    action: Annotated[Literal["interrupt", "rollback"], Query()] = "interrupt",
) -> Response:
    execution = await runs.find(thread_id, run_id)
    if not is_active(execution.status) or not await runs.cancel(execution, action):
        raise NotFound("pending or running run", run_id)
    if wait:
        return runs.wait_response(execution, cancel_on_disconnect=False)
    return Response(status_code=202)


# Threadless runs


@router.post("/runs", responses=responses(400, 404, 422, 429), summary="Create a threadless run")
async def create_stateless_run(body: RunCreate, runs: RunsDep) -> Response:
    return _created(await runs.create(body, None), stateless=True)


@router.post(
    "/runs/stream",
    responses={**SSE, **responses(400, 404, 422, 429)},
    summary="Create a threadless run and stream its events",
)
async def stream_stateless_run(body: RunCreate, runs: RunsDep) -> Response:
    execution = await runs.create(body, None)
    return runs.stream_response(
        execution, after="0-0", modes=None, cancel_on_disconnect=body.on_disconnect == "cancel"
    )


@router.post(
    "/runs/wait",
    responses=responses(400, 404, 422, 429),
    summary="Create a threadless run and wait for its final values",
)
async def wait_stateless_run(body: RunCreate, runs: RunsDep) -> Response:
    execution = await runs.create(body, None)
    return runs.wait_response(execution, cancel_on_disconnect=body.on_disconnect == "cancel")


@router.post(
    "/runs/batch", responses=responses(400, 404, 422, 429), summary="Create threadless runs"
)
async def create_batch(body: list[RunCreate], runs: RunsDep) -> Response:
    if not body:
        raise BadRequest("Provide at least one run.")
    return json_response([run_json(await runs.create(one, None)) for one in body])


@router.post("/runs/cancel", status_code=204, responses=responses(404, 422), summary="Cancel runs")
async def cancel_runs(
    body: RunsCancel,
    runs: RunsDep,
    action: Annotated[Literal["interrupt", "rollback"], Query()] = "interrupt",
) -> Response:
    if body.run_ids is not None:
        if body.thread_id is None:
            raise BadRequest("Provide the thread_id of the runs to cancel.")
        chosen = [await runs.find(body.thread_id, run_id) for run_id in body.run_ids]
    else:
        chosen = await runs.store.active_runs(thread_id=body.thread_id)
        if body.status in ("pending", "running"):
            wanted = Status.QUEUED if body.status == "pending" else Status.RUNNING
            chosen = [e for e in chosen if e.status is wanted]
    for execution in chosen:
        if is_active(execution.status):
            await runs.cancel(execution, action)
    return Response(status_code=204)
