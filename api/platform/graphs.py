"""The graphs behind assistants and threads, as the API process builds them: to describe
them (schemas, nodes and edges) and to read and update a thread's state. The API runs no
node of a graph; LangGraph only reads and writes checkpoints here."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel

from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.models import Assistant, Thread
from lg_deploy.core.platform.errors import BadRequest

log = logging.getLogger("lg_deploy.api")


async def build(
    registry: GraphRegistry,
    graph_id: str,
    checkpointer: BaseCheckpointSaver | None = None,
    config: dict[str, Any] | None = None,
) -> Pregel:
    """The compiled graph (``NotFound`` for a graph not in langgraph.json)."""
    return await registry.build(graph_id, config or {}, checkpointer)


def thread_graph_id(thread: Thread) -> str | None:
    """The graph a thread runs: the one its latest run ran (the platform keeps it in the
    thread's metadata), or the one it was created for."""
    graph_id = thread.meta.get("graph_id")
    return graph_id if isinstance(graph_id, str) else None


async def graph_of_thread(
    registry: GraphRegistry, thread: Thread, checkpointer: BaseCheckpointSaver
) -> Pregel | None:
    graph_id = thread_graph_id(thread)
    if graph_id is None or graph_id not in registry:
        return None
    return await build(registry, graph_id, checkpointer)


async def require_graph_of_thread(
    registry: GraphRegistry, thread: Thread, checkpointer: BaseCheckpointSaver
) -> Pregel:
    graph = await graph_of_thread(registry, thread, checkpointer)
    if graph is None:
        raise BadRequest(
            f"Thread {thread.thread_id} has no graph: run an assistant on it first, or create "
            "it with metadata.graph_id"
        )
    return graph


def _schema(describe: Any) -> dict[str, Any] | None:
    try:
        schema = describe()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.info("no JSON schema: %s: %s", type(exc).__name__, exc)
        return None
    return schema if isinstance(schema, dict) else None


def state_jsonschema(graph: Pregel) -> dict[str, Any] | None:
    builder = getattr(graph, "builder", None)
    if builder is None or not hasattr(builder, "state_schema"):
        return None
    from langgraph.graph.state import _get_json_schema  # the one LangGraph uses for input

    return _schema(
        lambda: _get_json_schema(
            typ=builder.state_schema,
            schemas=builder.schemas,
            channels=builder.channels,
            name=graph.get_name("State"),
        )
    )


def graph_schemas(graph: Pregel, graph_id: str) -> dict[str, Any]:
    context = _schema(graph.get_context_jsonschema)
    return {
        "graph_id": graph_id,
        "input_schema": _schema(graph.get_input_jsonschema),
        "output_schema": _schema(graph.get_output_jsonschema),
        "state_schema": state_jsonschema(graph),
        "config_schema": None,
        "context_schema": context,
    }


async def assistant_graph(registry: GraphRegistry, assistant: Assistant) -> Pregel:
    return await build(
        registry,
        assistant.graph_id,
        None,
        {"configurable": assistant.config.get("configurable", {})},
    )
