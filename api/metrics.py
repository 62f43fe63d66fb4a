"""GET /metrics: Prometheus metrics of the deployment as the store and the queue see it
(the same from every API process), plus this process's own."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge
from prometheus_client.exposition import generate_latest

from lg_deploy.api.deps import QueueDep, StoreDep
from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.states import Status

router = APIRouter()

# Terminal statuses only grow and would need a scan of the whole table: the workers'
# lg_deploy_attempts_finished counter tells those.
UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.INTERRUPTED)


@router.get("/metrics", include_in_schema=False)
async def metrics(store: StoreDep, queue: QueueDep) -> Response:
    registry = CollectorRegistry()
    up = Gauge(
        "lg_deploy_backend_up", "1 when the backend answers.", ["backend"], registry=registry
    )
    executions = Gauge(
        "lg_deploy_executions",
        "Executions not finished yet, by status (the store's count).",
        ["status"],
        registry=registry,
    )
    depth = Gauge(
        "lg_deploy_queue_depth",
        "Jobs in the queue (ARQ: waiting, deferred and running).",
        registry=registry,
    )
    try:
        for status, count in (await store.count_by_status(UNFINISHED)).items():
            executions.labels(status.value).set(count)
        up.labels("database").set(1)
    except BackendUnavailable:
        up.labels("database").set(0)
    try:
        depth.set(await queue.depth())
        up.labels("queue").set(1)
    except BackendUnavailable:
        up.labels("queue").set(0)
    body = generate_latest(registry) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
