"""Assistants: the system assistant of each graph, how an assistant id is read, and how
an assistant's config and context combine with a run's.

Every graph of langgraph.json has a system assistant whose id is derived from the graph id
as the platform derives it, so that clients written against the platform find the same ids
here; wherever an assistant id is accepted, a graph id is accepted too and means that
graph's system assistant.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from typing import Any

from lg_deploy.core.platform.errors import InvalidAssistant

# The namespace the platform derives system assistant ids from (uuid5 of the graph id).
SYSTEM_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
SYSTEM_METADATA = {"created_by": "system"}


def system_assistant_id(graph_id: str) -> uuid.UUID:
    return uuid.uuid5(SYSTEM_NAMESPACE, graph_id)


def resolve_assistant_id(value: str, graph_ids: Collection[str]) -> uuid.UUID:
    """An assistant UUID as given, or the system assistant of the graph named ``value``;
    ``InvalidAssistant`` otherwise."""
    if value in graph_ids:
        return system_assistant_id(value)
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidAssistant(value) from None


def merge_config(base: Mapping[str, Any] | None, over: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's config on top of its assistant's: ``configurable`` and ``metadata`` are
    merged key by key (the run wins), ``tags`` are joined, anything else the run sets
    replaces the assistant's."""
    merged: dict[str, Any] = dict(base or {})
    for key, value in (over or {}).items():
        if key in ("configurable", "metadata") and isinstance(value, Mapping):
            merged[key] = {**(merged.get(key) or {}), **value}
        elif key == "tags" and isinstance(value, list):
            merged[key] = [
                *(merged.get(key) or []),
                *(t for t in value if t not in merged.get(key, [])),
            ]
        else:
            merged[key] = value
    return merged
