"""``/assistants``: the system assistant of every graph, and configured variants of them."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, cast

from fastapi import APIRouter, Query, Response
from langgraph.pregel import Pregel

from lg_deploy.api.deps import RegistryDep
from lg_deploy.api.platform.deps import PlatformStoreDep
from lg_deploy.api.platform.errors import PlatformRoute, responses
from lg_deploy.api.platform.graphs import assistant_graph, graph_schemas
from lg_deploy.api.platform.render import assistant_json, json_response, page_response
from lg_deploy.api.platform.schemas import (
    AssistantCount,
    AssistantCreate,
    AssistantLatest,
    AssistantPatch,
    AssistantSearch,
    AssistantVersionsSearch,
)
from lg_deploy.core.errors import NotFound
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import Assistant
from lg_deploy.core.platform.assistants import (
    SYSTEM_METADATA,
    resolve_assistant_id,
    system_assistant_id,
)
from lg_deploy.core.platform.errors import InvalidAssistant
from lg_deploy.core.store.platform_base import AssistantQuery, PlatformStore

router = APIRouter(prefix="/assistants", tags=["assistants"], route_class=PlatformRoute)


def system_assistants(registry: GraphRegistry) -> list[Assistant]:
    return [
        Assistant(
            assistant_id=system_assistant_id(graph_id),
            graph_id=graph_id,
            meta=dict(SYSTEM_METADATA),
            name=graph_id,
            description=spec.description,
        )
        for graph_id, spec in registry.graphs.items()
    ]


async def find_assistant(store: PlatformStore, registry: GraphRegistry, value: str) -> Assistant:
    return await store.get_assistant(resolve_assistant_id(value, registry.graphs))


def _known_graph(registry: GraphRegistry, graph_id: str) -> None:
    if graph_id not in registry:
        raise NotFound("graph", graph_id)


@router.post("", responses=responses(404, 409, 422), summary="Create an assistant")
async def create_assistant(
    body: AssistantCreate, store: PlatformStoreDep, registry: RegistryDep
) -> Response:
    _known_graph(registry, body.graph_id)
    try:
        assistant_id = uuid.UUID(body.assistant_id) if body.assistant_id else uuid.uuid4()
    except ValueError:
        raise InvalidAssistant(str(body.assistant_id)) from None
    assistant = Assistant(
        assistant_id=assistant_id,
        graph_id=body.graph_id,
        config=body.config,
        context=body.context,
        meta=body.metadata,
        name=body.name or "Untitled",
        description=body.description,
    )
    return json_response(assistant_json(await store.create_assistant(assistant, body.if_exists)))


@router.post("/search", summary="Search assistants")
async def search_assistants(body: AssistantSearch, store: PlatformStoreDep) -> Response:
    found = await store.search_assistants(
        AssistantQuery(body.graph_id, body.name, body.metadata),
        limit=body.limit,
        offset=body.offset,
        sort_by=body.sort_by or "created_at",
        order=body.sort_order or "desc",
    )
    items = [assistant_json(a) for a in found.items]
    return page_response(items, total=found.total, offset=body.offset, select=body.select)


@router.post("/count", summary="Count assistants")
async def count_assistants(body: AssistantCount, store: PlatformStoreDep) -> Response:
    found = await store.search_assistants(
        AssistantQuery(body.graph_id, body.name, body.metadata),
        limit=1,
        offset=0,
        sort_by="created_at",
        order="desc",
    )
    return json_response(found.total)


@router.get("/{assistant_id}", responses=responses(404, 422), summary="Get an assistant")
async def get_assistant(
    assistant_id: str, store: PlatformStoreDep, registry: RegistryDep
) -> Response:
    return json_response(assistant_json(await find_assistant(store, registry, assistant_id)))


@router.patch(
    "/{assistant_id}", responses=responses(404, 422), summary="Update an assistant (a new version)"
)
async def update_assistant(
    assistant_id: str, body: AssistantPatch, store: PlatformStoreDep, registry: RegistryDep
) -> Response:
    current = await find_assistant(store, registry, assistant_id)
    changes: dict[str, Any] = {}
    if body.graph_id is not None:
        _known_graph(registry, body.graph_id)
        changes["graph_id"] = body.graph_id
    for field in ("config", "context", "metadata", "name", "description"):
        value = getattr(body, field)
        if value is not None:
            changes[field] = value
    updated = await store.update_assistant(current.assistant_id, changes)
    return json_response(assistant_json(updated))


@router.delete(
    "/{assistant_id}", status_code=204, responses=responses(404, 422), summary="Delete an assistant"
)
async def delete_assistant(
    assistant_id: str, store: PlatformStoreDep, registry: RegistryDep
) -> Response:
    await store.delete_assistant(resolve_assistant_id(assistant_id, registry.graphs))
    return Response(status_code=204)


@router.get("/{assistant_id}/graph", responses=responses(404, 422), summary="The assistant's graph")
async def get_assistant_graph(
    assistant_id: str,
    store: PlatformStoreDep,
    registry: RegistryDep,
    xray: Annotated[str, Query(description="true, false, or a depth")] = "false",
) -> Response:
    assistant = await find_assistant(store, registry, assistant_id)
    graph = await assistant_graph(registry, assistant)
    depth: int | bool = int(xray) if xray.isdigit() else xray.lower() == "true"
    drawable = await graph.aget_graph(xray=depth)
    return json_response(drawable.to_json())


@router.get(
    "/{assistant_id}/schemas", responses=responses(404, 422), summary="The assistant's schemas"
)
async def get_assistant_schemas(
    assistant_id: str, store: PlatformStoreDep, registry: RegistryDep
) -> Response:
    assistant = await find_assistant(store, registry, assistant_id)
    graph = await assistant_graph(registry, assistant)
    return json_response(graph_schemas(graph, assistant.graph_id))


async def _subgraphs(
    store: PlatformStore,
    registry: GraphRegistry,
    assistant_id: str,
    namespace: str | None,
    recurse: bool,
) -> Response:
    assistant = await find_assistant(store, registry, assistant_id)
    graph = await assistant_graph(registry, assistant)
    found = {
        ns: graph_schemas(cast(Pregel, subgraph), assistant.graph_id)
        async for ns, subgraph in graph.aget_subgraphs(namespace=namespace, recurse=recurse)
    }
    return json_response(found)


@router.get(
    "/{assistant_id}/subgraphs", responses=responses(404, 422), summary="The assistant's subgraphs"
)
async def get_assistant_subgraphs(
    assistant_id: str, store: PlatformStoreDep, registry: RegistryDep, recurse: bool = False
) -> Response:
    return await _subgraphs(store, registry, assistant_id, None, recurse)


@router.get(
    "/{assistant_id}/subgraphs/{namespace}",
    responses=responses(404, 422),
    summary="The assistant's subgraphs under a namespace",
)
async def get_assistant_subgraphs_under(
    assistant_id: str,
    namespace: str,
    store: PlatformStoreDep,
    registry: RegistryDep,
    recurse: bool = False,
) -> Response:
    return await _subgraphs(store, registry, assistant_id, namespace, recurse)


@router.post(
    "/{assistant_id}/versions", responses=responses(404, 422), summary="The assistant's versions"
)
async def assistant_versions(
    assistant_id: str, body: AssistantVersionsSearch, store: PlatformStoreDep, registry: RegistryDep
) -> Response:
    assistant = await find_assistant(store, registry, assistant_id)
    versions = await store.assistant_versions(
        assistant.assistant_id, metadata=body.metadata, limit=body.limit, offset=body.offset
    )
    return json_response([assistant_json(v) for v in versions])


@router.post(
    "/{assistant_id}/latest",
    responses=responses(404, 422),
    summary="Make one of the assistant's versions the one in use",
)
async def set_latest_version(
    assistant_id: str, body: AssistantLatest, store: PlatformStoreDep, registry: RegistryDep
) -> Response:
    assistant = await find_assistant(store, registry, assistant_id)
    chosen = await store.set_assistant_version(assistant.assistant_id, body.version)
    return json_response(assistant_json(chosen))
