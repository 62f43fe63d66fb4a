"""Liveness and readiness, for load balancers and Kubernetes probes (GET or HEAD)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from lg_deploy.api.deps import QueueDep, SettingsDep, StoreDep
from lg_deploy.api.errors import RETRY_AFTER_S
from lg_deploy.api.schemas import Health
from lg_deploy.core.errors import BackendUnavailable

router = APIRouter(tags=["health"])


# HEAD answers as GET does (load balancers probe with it), outside the OpenAPI document.
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@router.head("/readyz", include_in_schema=False)
@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health}},
    summary="The store and the queue are reachable",
)
async def readyz(store: StoreDep, queue: QueueDep, settings: SettingsDep) -> Any:
    checks: dict[str, str] = {}
    for name, backend in (("database", store), ("queue", queue)):
        try:
            await asyncio.wait_for(backend.ping(), timeout=settings.ready_timeout_s)
            checks[name] = "ok"
        except (BackendUnavailable, TimeoutError) as exc:
            checks[name] = str(exc) or "timed out"
    if all(v == "ok" for v in checks.values()):
        return Health(status="ok", checks=checks)
    return JSONResponse(
        Health(status="unavailable", checks=checks).model_dump(),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
