"""The REST endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response, status
from fastapi.responses import JSONResponse

from lg_deploy.api.deps import QueueDep, RegistryDep, SettingsDep, StoreDep
from lg_deploy.api.errors import UnknownGraph, responses
from lg_deploy.api.schemas import (
    ExecuteRequest,
    ExecutionOut,
    ExecutionPage,
    GraphOut,
    Health,
    ResumeRequest,
)
from lg_deploy.core.errors import BackendUnavailable, NotFound, QueueFull
from lg_deploy.core.idempotency import request_hash
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.models import Execution
from lg_deploy.core.queue import Queue
from lg_deploy.core.states import TERMINAL, Status
from lg_deploy.core.store import Store

log = logging.getLogger("lg_deploy.api")

router = APIRouter()

MAX_WAIT_S = 300.0
NO_NUL = r"^[^\x00]*$"


def _parse_id(execution_id: str) -> uuid.UUID:
    """An id that is not a UUID names no execution: 404, like any unknown id."""
    try:
        return uuid.UUID(execution_id)
    except ValueError:
        raise NotFound("execution", execution_id) from None


def _location(execution_id: uuid.UUID) -> dict[str, str]:
    return {"Location": f"/executions/{execution_id}"}


@router.post(
    "/execute",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExecutionOut,
    responses=responses(400, 401, 409, 413, 422, 429, 503),
    summary="Submit an execution of a graph",
    tags=["executions"],
)
async def execute(
    body: ExecuteRequest,
    store: StoreDep,
    queue: QueueDep,
    registry: RegistryDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=200,
            description="Retries with the same key and body return the same execution.",
        ),
    ] = None,
) -> ExecutionOut:
    """Write the execution, enqueue its id and answer at once, without waiting for the graph."""
    if body.graph_id not in registry:
        raise UnknownGraph(body.graph_id, sorted(registry.graphs))
    await _check_backpressure(queue, store, settings.max_queue_depth)
    execution_id = new_execution_id()
    execution = Execution(
        execution_id=execution_id,
        graph_id=body.graph_id,
        thread_id=body.thread_id or str(execution_id),
        input=body.input,
        config=body.config or {},
        meta=body.metadata or {},
        timeout_s=body.timeout_s,
        max_attempts=body.max_attempts or settings.max_attempts,
        idempotency_key=idempotency_key,
        request_hash=request_hash(body.model_dump()) if idempotency_key else None,
    )
    # The row is committed before the id is enqueued (invariant 2): a crash in between
    # leaves a QUEUED row that the reconciler enqueues.
    execution, created = await store.create(
        execution, reject_if_thread_busy=body.multitask_strategy == "reject"
    )
    if created:
        try:
            await queue.enqueue(execution.execution_id)
        except BackendUnavailable as exc:
            # Accepted all the same: the row is committed, and the workers' reconciler
            # enqueues QUEUED executions that are not moving once the queue is back.
            log.warning("execution %s accepted; enqueue deferred: %s", execution_id, exc)
            response.headers["Enqueue-Deferred"] = "true"
    else:
        response.headers["Idempotent-Replayed"] = "true"
    response.headers.update(_location(execution.execution_id))
    return ExecutionOut.of(execution)


async def _check_backpressure(queue: Queue, store: Store, limit: int) -> None:
    """429 while the queue holds ``limit`` executions or more. When the queue cannot be
    asked, the store's count of QUEUED executions stands in for it."""
    if limit <= 0:
        return
    try:
        depth = await queue.depth()
    except BackendUnavailable:
        depth = (await store.count_by_status([Status.QUEUED]))[Status.QUEUED]
    if depth >= limit:
        raise QueueFull(depth, limit)


@router.get(
    "/executions",
    response_model=ExecutionPage,
    responses=responses(401, 422, 503),
    summary="List executions, newest first",
    tags=["executions"],
)
async def list_executions(
    store: StoreDep,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    graph_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    thread_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: Annotated[
        uuid.UUID | None, Query(description="next_cursor of the previous page")
    ] = None,
) -> ExecutionPage:
    page = await store.list_executions(
        status=status_, graph_id=graph_id, thread_id=thread_id, limit=limit, cursor=cursor
    )
    return ExecutionPage(
        items=[ExecutionOut.of(e) for e in page.items], next_cursor=page.next_cursor
    )


@router.get(
    "/executions/{execution_id}",
    response_model=ExecutionOut,
    responses=responses(401, 404, 503),
    summary="Read an execution",
    tags=["executions"],
)
async def get_execution(execution_id: str, store: StoreDep) -> ExecutionOut:
    return ExecutionOut.of(await store.get(_parse_id(execution_id)))


@router.get(
    "/executions/{execution_id}/wait",
    response_model=ExecutionOut,
    responses=responses(401, 404, 422, 503),
    summary="Wait until an execution is terminal or interrupted, or the timeout passes",
    tags=["executions"],
)
async def wait_execution(
    execution_id: str,
    store: StoreDep,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="Seconds")] = 30.0,
) -> ExecutionOut:
    """Long-poll the store (any worker may finish it), backing off from 10 ms to 250 ms."""
    eid = _parse_id(execution_id)
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        execution = await store.get(eid)
        if execution.status in TERMINAL or execution.status is Status.INTERRUPTED:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            break
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.25)
    return ExecutionOut.of(execution)


@router.post(
    "/executions/{execution_id}/cancel",
    response_model=ExecutionOut,
    responses=responses(401, 404, 409, 503),
    summary="Cancel a queued, running or interrupted execution",
    tags=["executions"],
)
async def cancel_execution(execution_id: str, store: StoreDep, queue: QueueDep) -> ExecutionOut:
    """The store is the truth (CANCELLED at once); the queue nudges the worker running it,
    which also finds out at its next heartbeat."""
    execution = await store.cancel(_parse_id(execution_id))
    with contextlib.suppress(BackendUnavailable):
        await queue.publish_cancel(execution.execution_id)
    return ExecutionOut.of(execution)


@router.post(
    "/executions/{execution_id}/resume",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ExecutionOut,
    responses=responses(401, 400, 404, 409, 422, 503),
    summary="Resume an interrupted execution with a value",
    tags=["executions"],
)
async def resume_execution(
    execution_id: str,
    body: Annotated[ResumeRequest, Body()],
    store: StoreDep,
    queue: QueueDep,
    response: Response,
) -> ExecutionOut:
    """INTERRUPTED -> QUEUED; the graph continues from its checkpoint, and the paused
    ``interrupt()`` returns ``resume``."""
    execution = await store.resume(_parse_id(execution_id), body.resume)
    try:
        await queue.enqueue(execution.execution_id, attempt=execution.attempt)
    except BackendUnavailable as exc:  # the reconciler enqueues it once the queue is back
        log.warning("execution %s resumed; enqueue deferred: %s", execution.execution_id, exc)
    response.headers.update(_location(execution.execution_id))
    return ExecutionOut.of(execution)


@router.get(
    "/graphs",
    response_model=list[GraphOut],
    responses=responses(401),
    summary="The graphs this deployment serves",
    tags=["graphs"],
)
async def list_graphs(registry: RegistryDep) -> list[GraphOut]:
    return [
        GraphOut(
            graph_id=spec.graph_id,
            description=spec.description,
            input_schema=spec.input_schema,
            output_schema=spec.output_schema,
        )
        for spec in registry.graphs.values()
    ]


@router.get("/healthz", response_model=Health, summary="The process is up", tags=["health"])
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="The store and the queue are reachable",
    tags=["health"],
)
async def readyz(store: StoreDep, queue: QueueDep, settings: SettingsDep) -> Any:
    checks: dict[str, str] = {}
    for name, backend in (("database", store), ("queue", queue)):
        try:
            await asyncio.wait_for(backend.ping(), timeout=settings.ready_timeout_s)
            checks[name] = "ok"
        except (BackendUnavailable, TimeoutError) as exc:
            checks[name] = str(exc) or "timed out"
    if all(v == "ok" for v in checks.values()):
        return Health(status="ok", checks=checks)
    return JSONResponse(
        Health(status="unavailable", checks=checks).model_dump(),
        status_code=503,
        headers={"Retry-After": "5"},
    )
