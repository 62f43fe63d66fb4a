"""Typed dependencies: routes reach the backends the lifespan opened through these.

``create_app`` takes a factory that opens the backends; the lifespan keeps what it yields
on ``app.state``, and routes ask for each part by type. The getters are ``async def`` so
that FastAPI calls them on the event loop, not in its thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.api.waiting import Waiters
from lg_deploy.core.events import EventLog
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.queue import Queue
from lg_deploy.core.settings import Settings
from lg_deploy.core.store import Store


@dataclass
class Backends:
    """What the API needs of the outside world: the store and the queue; and for the
    LangGraph Platform API (``api/platform/``), the runs' event log and a checkpointer
    that reads and updates threads' state."""

    store: Store
    queue: Queue
    events: EventLog | None = None
    checkpointer: BaseCheckpointSaver | None = None


# Opens the backends for the lifetime of the app and closes them after.
BackendsFactory = Callable[[], AbstractAsyncContextManager[Backends]]


async def get_backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


async def get_store(request: Request) -> Store:
    return (await get_backends(request)).store


async def get_queue(request: Request) -> Queue:
    return (await get_backends(request)).queue


async def get_registry(request: Request) -> GraphRegistry:
    registry: GraphRegistry = request.app.state.registry
    return registry


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_waiters(request: Request) -> Waiters:
    waiters: Waiters = request.app.state.waiters
    return waiters


StoreDep = Annotated[Store, Depends(get_store)]
WaitersDep = Annotated[Waiters, Depends(get_waiters)]
QueueDep = Annotated[Queue, Depends(get_queue)]
RegistryDep = Annotated[GraphRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
