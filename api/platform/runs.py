"""``/threads/{thread_id}/runs`` and ``/runs``: runs of an assistant on a thread, or on a
thread of their own (threadless), in the background, streamed over SSE or waited for.
How a run is created, found and stopped is in ``run_ops.py``."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response

from lg_deploy.api.platform.errors import PlatformRoute, responses
from lg_deploy.api.platform.render import json_response, run_json, selected
from lg_deploy.api.platform.run_ops import RunsDep
from lg_deploy.api.platform.schemas import RunCreate, RunsCancel, ThreadIdPath
from lg_deploy.core.errors import NotFound
from lg_deploy.core.models import Execution
from lg_deploy.core.platform.errors import BadRequest
from lg_deploy.core.platform.statuses import RunStatus, execution_statuses, is_active
from lg_deploy.core.states import Status

router = APIRouter(tags=["runs"], route_class=PlatformRoute)

SSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"}
}
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
async def create_run(thread_id: ThreadIdPath, body: RunCreate, runs: RunsDep) -> Response:
    return _created(await runs.create(body, thread_id), stateless=False)


@router.post(
    "/threads/{thread_id}/runs/stream",
    responses={**SSE, **responses(400, 404, 409, 422, 429)},
    summary="Create a run and stream its events",
)
async def stream_run(thread_id: ThreadIdPath, body: RunCreate, runs: RunsDep) -> Response:
    execution = await runs.create(body, thread_id)
    return runs.stream_response(
        execution, after="0-0", modes=None, cancel_on_disconnect=body.on_disconnect == "cancel"
    )


@router.post(
    "/threads/{thread_id}/runs/wait",
    responses=responses(400, 404, 409, 422, 429),
    summary="Create a run and wait for its final values",
)
async def wait_run(thread_id: ThreadIdPath, body: RunCreate, runs: RunsDep) -> Response:
    execution = await runs.create(body, thread_id)
    return runs.wait_response(execution, cancel_on_disconnect=body.on_disconnect == "cancel")


@router.get(
    "/threads/{thread_id}/runs", responses=responses(404, 422), summary="List a thread's runs"
)
async def list_runs(
    thread_id: ThreadIdPath,
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
async def get_run(thread_id: ThreadIdPath, run_id: str, runs: RunsDep) -> Response:
    return json_response(run_json(await runs.find(thread_id, run_id)))


@router.delete(
    "/threads/{thread_id}/runs/{run_id}",
    status_code=204,
    responses=responses(404, 409),
    summary="Delete a finished run",
)
async def delete_run(thread_id: ThreadIdPath, run_id: str, runs: RunsDep) -> Response:
    execution = await runs.find(thread_id, run_id)
    await runs.store.delete(execution.execution_id)
    return Response(status_code=204)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/join",
    responses=responses(404),
    summary="Wait for a run's final values",
)
async def join_run(
    thread_id: ThreadIdPath, run_id: str, runs: RunsDep, cancel_on_disconnect: bool = False
) -> Response:
    execution = await runs.find(thread_id, run_id)
    return runs.wait_response(execution, cancel_on_disconnect=cancel_on_disconnect)


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    responses={**SSE, **responses(404, 422)},
    summary="Stream a run's events: from now, or after Last-Event-ID",
)
async def join_run_stream(
    thread_id: ThreadIdPath,
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
    thread_id: ThreadIdPath,
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
        assert body.thread_id is not None  # RunsCancel says so
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
