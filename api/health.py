"""Liveness and readiness, for load balancers and Kubernetes probes (GET or HEAD).

Ready means the database answers: the API can accept and read executions. With the queue
down it still accepts (the row is the truth, the reconciler enqueues it later), so it
stays ready and says "degraded"; taking every API pod out of its Service during a Redis
outage would refuse work the design can take.
"""

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
    summary="The database answers (503 otherwise); the queue's state is in the checks",
)
async def readyz(store: StoreDep, queue: QueueDep, settings: SettingsDep) -> Any:
    checks: dict[str, str] = {}
    for name, backend in (("database", store), ("queue", queue)):
        try:
            await asyncio.wait_for(backend.ping(), timeout=settings.ready_timeout_s)
            checks[name] = "ok"
        except (BackendUnavailable, TimeoutError) as exc:
            checks[name] = str(exc) or "timed out"
    if checks["database"] == "ok":
        return Health(status="ok" if checks["queue"] == "ok" else "degraded", checks=checks)
    return JSONResponse(
        Health(status="unavailable", checks=checks).model_dump(),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
