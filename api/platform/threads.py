"""``/threads``: conversations, their metadata, and their lifecycle. A thread's state is
in ``state.py``; its runs in ``runs.py``."""

from __future__ import annotations

import contextlib
import uuid

from fastapi import APIRouter, Response
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.pregel import Pregel
from langgraph.types import StateUpdate

from lg_deploy.api.deps import QueueDep, RegistryDep
from lg_deploy.api.platform.control import cancel_run
from lg_deploy.api.platform.deps import CheckpointerDep, EventsDep, PlatformStoreDep
from lg_deploy.api.platform.errors import PlatformRoute, responses
from lg_deploy.api.platform.graphs import require_graph_of_thread
from lg_deploy.api.platform.render import json_response, page_response, thread_json
from lg_deploy.api.platform.schemas import (
    ThreadCount,
    ThreadCreate,
    ThreadIdPath,
    ThreadPatch,
    ThreadSearch,
)
from lg_deploy.api.platform.state import record_state, refused_updates
from lg_deploy.core.errors import NotFound
from lg_deploy.core.models import Thread
from lg_deploy.core.platform.checkpoints import copy_thread
from lg_deploy.core.platform.errors import AlreadyExists
from lg_deploy.core.store.platform_base import ThreadQuery

router = APIRouter(prefix="/threads", tags=["threads"], route_class=PlatformRoute)


@router.post("", responses=responses(400, 409, 422), summary="Create a thread")
async def create_thread(
    body: ThreadCreate,
    store: PlatformStoreDep,
    registry: RegistryDep,
    checkpointer: CheckpointerDep,
) -> Response:
    thread_id = body.thread_id or str(uuid.uuid4())
    thread = Thread(thread_id=thread_id, meta=body.metadata)
    if not body.supersteps:
        return json_response(thread_json(await store.create_thread(thread, body.if_exists)))
    steps = [[StateUpdate(u.values, u.as_node) for u in step.updates] for step in body.supersteps]
    # Every superstep is applied to a scratch copy first: LangGraph refuses a bad one only
    # when it reaches it, after writing the checkpoints of those before.
    await _apply(await require_graph_of_thread(registry, thread, InMemorySaver()), thread_id, steps)
    try:
        created = await store.create_thread(thread, "raise")
    except AlreadyExists:
        if body.if_exists == "raise":
            raise
        # do_nothing: the thread that exists is answered as it is, its state untouched.
        return json_response(thread_json(await store.get_thread(thread_id)))
    try:
        graph = await require_graph_of_thread(registry, created, checkpointer)
        await _apply(graph, thread_id, steps)
        await record_state(store, graph, thread_id)
    except BaseException:
        # Leave nothing half-made behind.
        with contextlib.suppress(Exception):
            await checkpointer.adelete_thread(thread_id)
        with contextlib.suppress(Exception):
            await store.delete_thread(thread_id)
        raise
    return json_response(thread_json(await store.get_thread(thread_id)))


async def _apply(graph: Pregel, thread_id: str, steps: list[list[StateUpdate]]) -> None:
    with refused_updates():
        await graph.abulk_update_state({"configurable": {"thread_id": thread_id}}, steps)


@router.post("/search", summary="Search threads")
async def search_threads(body: ThreadSearch, store: PlatformStoreDep) -> Response:
    found = await store.search_threads(
        ThreadQuery(body.ids, body.metadata, body.status),
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by or "created_at",
        order=body.sort_order or "desc",
    )
    items = [thread_json(t) for t in found.items]
    return page_response(items, total=found.total, offset=body.offset, select=body.select)


@router.post("/count", summary="Count threads")
async def count_threads(body: ThreadCount, store: PlatformStoreDep) -> Response:
    found = await store.search_threads(
        ThreadQuery(None, body.metadata, body.status),
        limit=1,
        offset=0,
        sort_by="created_at",
        order="desc",
    )
    return json_response(found.total)


@router.get("/{thread_id}", responses=responses(404), summary="Get a thread")
async def get_thread(thread_id: ThreadIdPath, store: PlatformStoreDep) -> Response:
    return json_response(thread_json(await store.get_thread(thread_id)))


@router.patch("/{thread_id}", responses=responses(404, 422), summary="Update a thread's metadata")
async def patch_thread(
    thread_id: ThreadIdPath, body: ThreadPatch, store: PlatformStoreDep
) -> Response:
    return json_response(thread_json(await store.update_thread_metadata(thread_id, body.metadata)))


@router.delete(
    "/{thread_id}",
    status_code=204,
    responses=responses(404),
    summary="Delete a thread, its runs (active ones are cancelled) and its checkpoints",
)
async def delete_thread(
    thread_id: ThreadIdPath,
    store: PlatformStoreDep,
    queue: QueueDep,
    events: EventsDep,
    checkpointer: CheckpointerDep,
) -> Response:
    await store.get_thread(thread_id)
    for run in await store.active_runs(thread_id=thread_id):
        await cancel_run(
            run, "interrupt", store=store, queue=queue, events=events, checkpointer=checkpointer
        )
    await checkpointer.adelete_thread(thread_id)
    with contextlib.suppress(NotFound):  # a temporary thread whose queued run was cancelled
        await store.delete_thread(thread_id)
    return Response(status_code=204)


@router.post(
    "/{thread_id}/copy",
    responses=responses(404),
    summary="Copy a thread: its metadata, state and checkpoints (not its runs)",
)
async def copy(
    thread_id: ThreadIdPath, store: PlatformStoreDep, checkpointer: CheckpointerDep
) -> Response:
    source = await store.get_thread(thread_id)
    target = Thread(
        thread_id=str(uuid.uuid4()),
        meta=source.meta,
        status="idle" if source.status == "busy" else source.status,
        state_values=source.state_values,
        interrupts=source.interrupts,
    )
    await copy_thread(checkpointer, thread_id, target.thread_id)
    created = await store.create_thread(target, "raise")
    return json_response(thread_json(created))
