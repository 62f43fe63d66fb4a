"""What the LangGraph Platform API tests share: the servers they drive (``lg-deploy dev``,
and ``lg-deploy api`` with workers on PostgreSQL and Redis), and how to compare what a
stream carried with what the same graph yields in this process."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from lg_deploy.core.graphs import load_registry
from lg_deploy.core.jsonable import to_jsonable
from tests.conftest import TEST_GRAPHS, drop_queue, fresh_database, unique_queue_name
from tests.harness import DevServer, Fleet, running

# Short heartbeats, so that a test can see one without waiting long.
PLATFORM_ENV = {"LG_DEPLOY_STREAM_HEARTBEAT_S": "0.5"}


@contextlib.contextmanager
def dev_server(folder: Path, **env: str) -> Iterator[DevServer]:
    server = DevServer(
        TEST_GRAPHS,
        f"sqlite+aiosqlite:///{folder}/lg-deploy.db",
        folder / "dev.log",
        **{**PLATFORM_ENV, **env},
    )
    with running(server.start()):
        yield server.wait_ready()


@contextlib.contextmanager
def platform_fleet(request: pytest.FixtureRequest, folder: Path, **env: str) -> Iterator[Fleet]:
    """A fresh database and a queue of their own; the caller starts the processes."""
    pg_admin = request.getfixturevalue("pg_admin")
    template = request.getfixturevalue("pg_template")
    redis_url: str = request.getfixturevalue("redis_url")
    name = unique_queue_name()
    with fresh_database(pg_admin, template) as url:
        fleet = Fleet(
            folder,
            LG_DEPLOY_DATABASE_URL=url,
            LG_DEPLOY_QUEUE_URL=redis_url,
            LG_DEPLOY_QUEUE_NAME=name,
            LG_DEPLOY_EVENTS_PREFIX=f"{name}:events",
            LG_DEPLOY_CONFIG=str(TEST_GRAPHS),
            **{**PLATFORM_ENV, **env},
        )
        try:
            yield fleet
        finally:
            fleet.stop_all()
            drop_queue(redis_url, name)


# Ids, timestamps and the like differ between two runs of the same graph.
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX32 = re.compile(r"\b[0-9a-f]{32}\b")
_VOLATILE = {"timestamp", "created_at", "checkpoint_map"}
# What the runtime adds to a run's config metadata (it flows into checkpoint and message
# metadata); the in-process reference run has none of it.
_RUNTIME_KEYS = {"run_id", "assistant_id", "graph_id", "thread_id"}


def normalized(value: Any) -> Any:
    """``value`` with ids, timestamps and the runtime's own metadata made uniform."""
    if isinstance(value, dict):
        return {
            k: "<volatile>" if k in _VOLATILE else normalized(v)
            for k, v in value.items()
            if not (k.startswith("lg_deploy_") or (k in _RUNTIME_KEYS and not isinstance(v, dict)))
        }
    if isinstance(value, list | tuple):
        return [normalized(v) for v in value]
    if isinstance(value, str):
        return _HEX32.sub("<id>", _UUID.sub("<id>", value))
    return value


def reference_config() -> Any:
    """A fresh thread, with the tags lg-deploy gives every attempt (they show in some
    stream modes)."""
    return {
        "configurable": {"thread_id": str(uuid.uuid4())},
        "tags": ["lg-deploy", f"execution:{uuid.uuid4()}"],
    }


async def reference_stream(
    graph_id: str,
    graph_input: Any,
    stream_mode: list[str],
    *,
    subgraphs: bool = False,
) -> list[tuple[str, Any]]:
    """What ``graph.astream`` yields in this process for a fresh thread, as (event name,
    JSON data) pairs named the way the platform names its SSE events."""
    registry = load_registry(TEST_GRAPHS)
    graph = await registry.build(graph_id, {}, InMemorySaver())
    config: Any = reference_config()
    found: list[tuple[str, Any]] = []
    modes: Any = stream_mode
    async for item in graph.astream(graph_input, config, stream_mode=modes, subgraphs=subgraphs):
        namespace, mode, chunk = item if subgraphs else ((), *item)
        found.append((mode + "".join("|" + n for n in namespace), to_jsonable(chunk)))
    return found
