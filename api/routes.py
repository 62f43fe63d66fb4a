"""The REST endpoints."""

from __future__ import annotations

import contextlib
import logging
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query, Request, Response, status

from lg_deploy.api import metrics
from lg_deploy.api.deps import QueueDep, RegistryDep, SettingsDep, StoreDep, WaitersDep
from lg_deploy.api.errors import UnknownGraph, responses
from lg_deploy.api.render import execution_response, page_response
from lg_deploy.api.schemas import (
    ExecuteRequest,
    ExecutionOut,
    ExecutionPage,
    GraphOut,
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
    request: Request,
    body: ExecuteRequest,
    store: StoreDep,
    queue: QueueDep,
    registry: RegistryDep,
    settings: SettingsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            pattern=r"\S",
            description="Retries with the same key and body return the same execution. "
            "Not empty or blank.",
        ),
    ] = None,
) -> Response:
    """Write the execution, enqueue its id and answer at once, without waiting for the graph."""
    if body.graph_id not in registry:
        raise UnknownGraph(body.graph_id, sorted(registry.graphs))
    await _check_backpressure(queue, store, settings.max_queue_depth)
    execution_id = new_execution_id()
    retention = settings.retention_policy(registry).resolve(
        body.graph_id,
        finished_s=body.retention_s,
        interrupted_s=body.interrupted_retention_s,
    )
    execution = Execution(
        execution_id=execution_id,
        graph_id=body.graph_id,
        thread_id=body.thread_id or str(execution_id),
        input=body.input,
        config=body.run_config(),
        meta=body.metadata or {},
        timeout_s=body.timeout_s,
        durability=body.durability,
        max_attempts=body.max_attempts or settings.max_attempts,
        idempotency_key=idempotency_key,
        request_hash=request_hash(body.model_dump()) if idempotency_key else None,
        request_id=request.state.request_id,
        retention_s=retention.finished_s,
        interrupted_retention_s=retention.interrupted_s,
    )
    # The row is committed before the id is enqueued (docs/architecture.md, invariant 2):
    # a crash in between leaves a QUEUED row that the reconciler enqueues.
    execution, created = await store.create(
        execution, reject_if_thread_busy=body.multitask_strategy == "reject"
    )
    headers = _location(execution.execution_id)
    if created:
        metrics.SUBMITTED.labels(execution.graph_id).inc()
        try:
            await queue.enqueue(execution.execution_id)
        except BackendUnavailable as exc:
            # Accepted all the same: the row is committed, and the workers' reconciler
            # enqueues QUEUED executions that are not moving once the queue is back.
            log.warning("execution %s accepted; enqueue deferred: %s", execution_id, exc)
            headers["Enqueue-Deferred"] = "true"
    else:
        headers["Idempotent-Replayed"] = "true"
    return execution_response(execution, status_code=202, headers=headers)


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
    include: Annotated[
        list[Literal["input", "output"]],
        Query(description="Add each item's input, or its output and interrupts."),
    ] = [],  # noqa: B006 (FastAPI copies defaults)
) -> Response:
    page = await store.list_executions(
        status=status_, graph_id=graph_id, thread_id=thread_id, limit=limit, cursor=cursor
    )
    return page_response(page, include)


@router.get(
    "/executions/{execution_id}",
    response_model=ExecutionOut,
    responses=responses(401, 404, 503),
    summary="Read an execution",
    tags=["executions"],
)
async def get_execution(execution_id: str, store: StoreDep) -> Response:
    return execution_response(await store.get(_parse_id(execution_id)))


@router.delete(
    "/executions/{execution_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=responses(401, 404, 409, 503),
    summary="Delete a finished execution's record",
    tags=["executions"],
)
async def delete_execution(execution_id: str, store: StoreDep) -> Response:
    """Only COMPLETED, FAILED or CANCELLED executions: cancel a running one first. The
    thread's checkpoints stay with the thread."""
    await store.delete(_parse_id(execution_id))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


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
    waiters: WaitersDep,
    timeout: Annotated[float, Query(ge=0, le=MAX_WAIT_S, description="Seconds")] = 30.0,
) -> Response:
    """A long poll that holds no database connection while it waits (``api/waiting.py``)."""
    eid = _parse_id(execution_id)
    execution = await store.get(eid)
    if not _settled(execution) and timeout > 0:
        await waiters.wait(eid, timeout)
        execution = await store.get(eid)
    return execution_response(execution)


def _settled(execution: Execution) -> bool:
    return execution.status in TERMINAL or execution.status is Status.INTERRUPTED


@router.post(
    "/executions/{execution_id}/cancel",
    response_model=ExecutionOut,
    responses=responses(401, 404, 409, 503),
    summary="Cancel a queued, running or interrupted execution",
    tags=["executions"],
)
async def cancel_execution(execution_id: str, store: StoreDep, queue: QueueDep) -> Response:
    """The store is the truth (CANCELLED at once); the queue nudges the worker running it,
    which also finds out at its next lease renewal, and wakes the long polls."""
    execution = await store.cancel(_parse_id(execution_id))
    metrics.CANCELLED.labels(execution.graph_id).inc()
    with contextlib.suppress(BackendUnavailable):
        await queue.publish("cancelled", execution.execution_id)
        await queue.publish("settled", execution.execution_id)
    return execution_response(execution)


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
) -> Response:
    """INTERRUPTED -> QUEUED; the graph continues from its checkpoint, and the paused
    ``interrupt()`` returns ``resume``."""
    execution = await store.resume(_parse_id(execution_id), body.resume)
    try:
        await queue.enqueue(execution.execution_id, attempt=execution.attempt)
    except BackendUnavailable as exc:  # the reconciler enqueues it once the queue is back
        log.warning("execution %s resumed; enqueue deferred: %s", execution.execution_id, exc)
    return execution_response(execution, status_code=202, headers=_location(execution.execution_id))


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
