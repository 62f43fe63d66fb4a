"""A thread's state and history (``/threads/{thread_id}/state``, ``/history``): read and
updated through the thread's graph, as LangGraph's ``aget_state``, ``aupdate_state`` and
``aget_state_history`` see it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Response
from langchain_core.runnables import RunnableConfig
from langgraph.errors import InvalidUpdateError
from langgraph.pregel import Pregel

from lg_deploy.api.deps import RegistryDep
from lg_deploy.api.platform.deps import CheckpointerDep, PlatformStoreDep
from lg_deploy.api.platform.errors import PlatformRoute, responses
from lg_deploy.api.platform.graphs import graph_of_thread, require_graph_of_thread
from lg_deploy.api.platform.render import checkpoint_json, json_response, state_json
from lg_deploy.api.platform.schemas import (
    CheckpointIdPath,
    CheckpointIdQuery,
    HistorySearch,
    ThreadIdPath,
    ThreadStateAt,
    ThreadStateUpdate,
)
from lg_deploy.core.errors import ThreadBusy
from lg_deploy.core.jsonable import storable_text, to_jsonable
from lg_deploy.core.platform.errors import BadRequest
from lg_deploy.core.platform.statuses import settled_status
from lg_deploy.core.store.platform_base import PlatformStore

router = APIRouter(prefix="/threads", tags=["threads"], route_class=PlatformRoute)

CHECKPOINT_KEYS = ("checkpoint_ns", "checkpoint_id", "checkpoint_map")


def thread_config(thread_id: str, checkpoint: dict[str, Any] | None = None) -> RunnableConfig:
    configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    for key in CHECKPOINT_KEYS:
        if (checkpoint or {}).get(key) is not None:
            configurable[key] = checkpoint[key]  # type: ignore[index]
    return cast(RunnableConfig, {"configurable": configurable})


def empty_state(thread_id: str) -> dict[str, Any]:
    return {
        "values": {},
        "next": [],
        "tasks": [],
        "metadata": None,
        "created_at": None,
        "checkpoint": checkpoint_json(thread_config(thread_id)),
        "parent_checkpoint": None,
        "interrupts": [],
        "checkpoint_id": None,
        "parent_checkpoint_id": None,
    }


@contextlib.contextmanager
def refused_updates() -> Iterator[None]:
    """LangGraph's refusal of a state update as the platform's 400: a node the graph
    lacks, values that are not the state's shape (``InvalidUpdateError``), or values a
    reducer or the state's schema cannot take (their ``TypeError`` / ``ValueError``). It
    refuses them before writing the checkpoint."""
    try:
        yield
    except (InvalidUpdateError, TypeError, ValueError) as exc:
        message = storable_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise BadRequest(f"Invalid state update: {message[:500]}") from exc


async def record_state(store: PlatformStore, graph: Pregel, thread_id: str) -> None:
    """Put the thread's current state on its row (after a state update)."""
    snapshot = await graph.aget_state(thread_config(thread_id))
    interrupts = {
        task.id: [to_jsonable(i) for i in task.interrupts]
        for task in snapshot.tasks
        if task.interrupts
    }
    await store.record_thread_state(
        thread_id,
        status=settled_status(False, bool(snapshot.next)),
        values=to_jsonable(snapshot.values),
        interrupts=interrupts or None,
    )


async def _state(
    store: PlatformStore,
    registry: Any,
    checkpointer: Any,
    thread_id: str,
    checkpoint: dict[str, Any] | None,
    subgraphs: bool,
) -> Response:
    thread = await store.get_thread(thread_id)
    graph = await graph_of_thread(registry, thread, checkpointer)
    if graph is None:
        return json_response(empty_state(thread_id))
    snapshot = await graph.aget_state(thread_config(thread_id, checkpoint), subgraphs=subgraphs)
    return json_response(state_json(snapshot))


@router.get("/{thread_id}/state", responses=responses(404), summary="A thread's current state")
async def get_state(
    thread_id: ThreadIdPath,
    store: PlatformStoreDep,
    registry: RegistryDep,
    checkpointer: CheckpointerDep,
    subgraphs: bool = False,
) -> Response:
    return await _state(store, registry, checkpointer, thread_id, None, subgraphs)


@router.get(
    "/{thread_id}/state/{checkpoint_id}",
    responses=responses(404),
    summary="A thread's state at a checkpoint",
)
async def get_state_at(
    thread_id: ThreadIdPath,
    checkpoint_id: CheckpointIdPath,
    store: PlatformStoreDep,
    registry: RegistryDep,
    checkpointer: CheckpointerDep,
    subgraphs: bool = False,
) -> Response:
    checkpoint = {"checkpoint_id": checkpoint_id}
    return await _state(store, registry, checkpointer, thread_id, checkpoint, subgraphs)


@router.post(
    "/{thread_id}/state/checkpoint",
    responses=responses(404, 422),
    summary="A thread's state at a checkpoint (given in the body)",
)
async def post_state_at(
    thread_id: ThreadIdPath,
    body: ThreadStateAt,
    store: PlatformStoreDep,
    registry: RegistryDep,
    checkpointer: CheckpointerDep,
) -> Response:
    return await _state(store, registry, checkpointer, thread_id, body.checkpoint, body.subgraphs)


@router.post(
    "/{thread_id}/state",
    responses=responses(400, 404, 409, 422),
    summary="Update a thread's state, as if a node had returned the values",
)
async def update_state(
    thread_id: ThreadIdPath,
    body: ThreadStateUpdate,
    store: PlatformStoreDep,
    registry: RegistryDep,
    checkpointer: CheckpointerDep,
) -> Response:
    thread = await store.get_thread(thread_id)
    if thread.status == "busy":
        raise ThreadBusy(thread_id)
    graph = await require_graph_of_thread(registry, thread, checkpointer)
    checkpoint = dict(body.checkpoint or {})
    if body.checkpoint_id:
        checkpoint["checkpoint_id"] = body.checkpoint_id
    with refused_updates():
        updated = await graph.aupdate_state(
            thread_config(thread_id, checkpoint), body.values, as_node=body.as_node
        )
    await record_state(store, graph, thread_id)
    return json_response({"checkpoint": checkpoint_json(updated)})


async def _history(
    store: PlatformStore,
    registry: Any,
    checkpointer: Any,
    thread_id: str,
    search: HistorySearch,
) -> Response:
    thread = await store.get_thread(thread_id)
    graph = await graph_of_thread(registry, thread, checkpointer)
    if graph is None:
        return json_response([])
    before = search.before
    if isinstance(before, str):
        before = {"checkpoint_id": before}
    states = [
        state_json(snapshot)
        async for snapshot in graph.aget_state_history(
            thread_config(thread_id, search.checkpoint),
            filter=search.metadata or None,
            before=thread_config(thread_id, before) if before else None,
            limit=search.limit,
        )
    ]
    return json_response(states)


@router.post(
    "/{thread_id}/history", responses=responses(404, 422), summary="A thread's past states"
)
async def post_history(
    thread_id: ThreadIdPath,
    body: HistorySearch,
    store: PlatformStoreDep,
    registry: RegistryDep,
    checkpointer: CheckpointerDep,
) -> Response:
    return await _history(store, registry, checkpointer, thread_id, body)


@router.get("/{thread_id}/history", responses=responses(404, 422), summary="A thread's past states")
async def get_history(
    thread_id: ThreadIdPath,
    store: PlatformStoreDep,
    registry: RegistryDep,
    checkpointer: CheckpointerDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    before: CheckpointIdQuery | None = None,
) -> Response:
    search = HistorySearch(limit=limit, before=before)
    return await _history(store, registry, checkpointer, thread_id, search)
