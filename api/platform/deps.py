"""Typed dependencies of the platform's routes: the store with its platform queries, the
runs' event log and the checkpointer, as the lifespan opened them (``api/deps.py``)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.api.deps import get_backends
from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.events import EventLog
from lg_deploy.core.store.platform_base import PlatformStore


async def get_platform_store(request: Request) -> PlatformStore:
    # The SQL store implements the platform's queries (core/store/platform_sql.py).
    return cast(PlatformStore, (await get_backends(request)).store)


async def get_events(request: Request) -> EventLog:
    events = (await get_backends(request)).events
    if events is None:
        raise BackendUnavailable("event log", "this process was started without one")
    return events


async def get_checkpointer(request: Request) -> BaseCheckpointSaver:
    checkpointer = (await get_backends(request)).checkpointer
    if checkpointer is None:
        raise BackendUnavailable("checkpointer", "this process was started without one")
    return checkpointer


PlatformStoreDep = Annotated[PlatformStore, Depends(get_platform_store)]
EventsDep = Annotated[EventLog, Depends(get_events)]
CheckpointerDep = Annotated[BaseCheckpointSaver, Depends(get_checkpointer)]
