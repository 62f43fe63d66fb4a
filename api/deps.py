"""Typed dependencies: routes reach the backends the lifespan opened through these.

``create_app`` takes a factory that opens the backends; the lifespan keeps what it yields
on ``app.state``, and routes ask for each part by type.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.queue import Queue
from lg_deploy.core.settings import Settings
from lg_deploy.core.store import Store


@dataclass
class Backends:
    """What the API needs of the outside world: the store and the queue."""

    store: Store
    queue: Queue


# Opens the backends for the lifetime of the app and closes them after.
BackendsFactory = Callable[[], AbstractAsyncContextManager[Backends]]


def get_backends(request: Request) -> Backends:
    backends: Backends = request.app.state.backends
    return backends


def get_store(request: Request) -> Store:
    return get_backends(request).store


def get_queue(request: Request) -> Queue:
    return get_backends(request).queue


def get_registry(request: Request) -> GraphRegistry:
    registry: GraphRegistry = request.app.state.registry
    return registry


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[Store, Depends(get_store)]
QueueDep = Annotated[Queue, Depends(get_queue)]
RegistryDep = Annotated[GraphRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
