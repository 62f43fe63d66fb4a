"""The platform's objects as JSON: Assistant, Thread, Run and ThreadState, as the SDK and
RemoteGraph read them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from fastapi import Response
from langgraph.types import PregelTask, StateSnapshot

from lg_deploy.core.jsonable import to_jsonable
from lg_deploy.core.models import Assistant, AssistantVersion, Execution, Thread
from lg_deploy.core.platform.assistants import system_assistant_id
from lg_deploy.core.platform.runs import RunOptions
from lg_deploy.core.platform.statuses import run_status


def json_response(
    content: Any, *, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    body = json.dumps(to_jsonable(content), separators=(",", ":"), ensure_ascii=False)
    return Response(body, status_code=status_code, headers=headers, media_type="application/json")


def page_response(
    items: Sequence[dict[str, Any]], *, total: int, offset: int, select: Iterable[str] | None
) -> Response:
    """A search's page with the platform's pagination headers."""
    chosen = [selected(item, select) for item in items]
    headers = {"X-Pagination-Total": str(total)}
    if offset + len(items) < total:
        headers["X-Pagination-Next"] = str(offset + len(items))
    return json_response(chosen, headers=headers)


def selected(item: dict[str, Any], select: Iterable[str] | None) -> dict[str, Any]:
    if not select:
        return item
    return {k: v for k, v in item.items() if k in set(select)}


def _at(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def assistant_json(assistant: Assistant | AssistantVersion) -> dict[str, Any]:
    updated = assistant.updated_at if isinstance(assistant, Assistant) else assistant.created_at
    return {
        "assistant_id": str(assistant.assistant_id),
        "graph_id": assistant.graph_id,
        "config": assistant.config,
        "context": assistant.context,
        "metadata": assistant.meta,
        "name": assistant.name,
        "description": assistant.description,
        "version": assistant.version,
        "created_at": _at(assistant.created_at),
        "updated_at": _at(updated),
    }


def thread_json(thread: Thread) -> dict[str, Any]:
    return {
        "thread_id": thread.thread_id,
        "created_at": _at(thread.created_at),
        "updated_at": _at(thread.updated_at),
        "state_updated_at": _at(thread.state_updated_at or thread.updated_at),
        "metadata": thread.meta,
        "config": {},
        "status": thread.status,
        "values": thread.state_values if thread.state_values is not None else {},
        "interrupts": thread.interrupts or {},
        "error": None,
    }


def run_kwargs(execution: Execution) -> dict[str, Any]:
    options = RunOptions.of(execution)
    kwargs: dict[str, Any] = (
        dict(options.kwargs) if options is not None else {"stream_mode": ["values"]}
    )
    kwargs.setdefault("config", execution.config)
    return {"input": execution.input, **kwargs}


def run_json(execution: Execution) -> dict[str, Any]:
    options = RunOptions.of(execution)
    assistant_id = execution.assistant_id or system_assistant_id(execution.graph_id)
    return {
        "run_id": str(execution.execution_id),
        "thread_id": execution.thread_id,
        "assistant_id": str(assistant_id),
        "created_at": _at(execution.created_at),
        "updated_at": _at(execution.updated_at),
        "status": run_status(execution.status, execution.error),
        "metadata": execution.meta,
        "kwargs": run_kwargs(execution),
        "multitask_strategy": options.multitask_strategy if options else "enqueue",
    }


def checkpoint_json(config: Any) -> dict[str, Any] | None:
    if not config:
        return None
    configurable = config.get("configurable", {})
    return {
        "thread_id": configurable.get("thread_id"),
        "checkpoint_ns": configurable.get("checkpoint_ns", ""),
        "checkpoint_id": configurable.get("checkpoint_id"),
        "checkpoint_map": configurable.get("checkpoint_map"),
    }


def _task_json(task: PregelTask) -> dict[str, Any]:
    state = task.state
    return {
        "id": task.id,
        "name": task.name,
        "path": to_jsonable(task.path),
        "error": f"{type(task.error).__name__}: {task.error}" if task.error else None,
        "interrupts": [to_jsonable(i) for i in task.interrupts],
        "checkpoint": (state or {}).get("configurable") if isinstance(state, dict) else None,
        "state": state_json(state) if isinstance(state, StateSnapshot) else None,
        "result": to_jsonable(task.result),
    }


def state_json(snapshot: StateSnapshot) -> dict[str, Any]:
    checkpoint = checkpoint_json(snapshot.config)
    parent = checkpoint_json(snapshot.parent_config)
    return {
        "values": to_jsonable(snapshot.values),
        "next": list(snapshot.next),
        "tasks": [_task_json(t) for t in snapshot.tasks],
        "metadata": to_jsonable(snapshot.metadata),
        "created_at": snapshot.created_at,
        "checkpoint": checkpoint,
        "parent_checkpoint": parent,
        "interrupts": [to_jsonable(i) for i in snapshot.interrupts],
        "checkpoint_id": (checkpoint or {}).get("checkpoint_id"),
        "parent_checkpoint_id": (parent or {}).get("checkpoint_id"),
    }
