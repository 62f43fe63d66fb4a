"""A second front door: the LangGraph Platform (Agent Server) HTTP API, so that
``langgraph-sdk``, ``RemoteGraph`` and their streaming work unchanged on top of lg-deploy's
durable executions (docs/compat.md). Errors answer ``{"detail": ...}`` as the SDK expects.

- ``assistants.py``: ``/assistants``; ``threads.py`` and ``state.py``: ``/threads``;
  ``runs.py``: ``/threads/{id}/runs`` and ``/runs`` (``run_ops.py``: creating, finding
  and stopping them); ``streams.py``: SSE and waiting; ``meta.py``: ``/ok`` and ``/info``.
"""

from __future__ import annotations

from typing import cast

from fastapi import APIRouter

from lg_deploy.api.deps import Backends
from lg_deploy.api.platform import assistants, meta, runs, state, threads
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.store.platform_base import PlatformStore

router = APIRouter()
router.include_router(assistants.router)
router.include_router(threads.router)
router.include_router(state.router)
router.include_router(runs.router)
router.include_router(meta.router)


async def start(backends: Backends, registry: GraphRegistry) -> None:
    """Make sure every graph has its system assistant (concurrent API processes may all
    do this at once: existing ones are left as they are)."""
    if backends.checkpointer is None:
        return  # a process opened without the platform API's backends
    store = cast(PlatformStore, backends.store)  # the SQL store: core/store/platform_sql.py
    await store.ensure_assistants(assistants.system_assistants(registry))
