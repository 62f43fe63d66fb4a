"""Typed dependencies: routes reach the backends the lifespan opened through these."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lg_deploy.api.runtime import Runtime
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.queue import Queue
from lg_deploy.core.settings import Settings
from lg_deploy.core.store import Store


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def get_store(request: Request) -> Store:
    return get_runtime(request).store


def get_queue(request: Request) -> Queue:
    return get_runtime(request).queue


def get_registry(request: Request) -> GraphRegistry:
    return get_runtime(request).registry


def get_settings(request: Request) -> Settings:
    return get_runtime(request).settings


StoreDep = Annotated[Store, Depends(get_store)]
QueueDep = Annotated[Queue, Depends(get_queue)]
RegistryDep = Annotated[GraphRegistry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
