"""What the API reports to Prometheus (docs/observability.md lists every metric).

Two kinds of metric live here:

- this process's own: HTTP requests by route template and status, executions submitted
  and cancelled. Under ``lg-deploy api --workers N`` prometheus-client's multiprocess mode
  sums them over the server processes (the registry comes from ``create_app``).
- the deployment's, read from the store and the queue at each scrape: unfinished
  executions per graph and status, the runnable backlog and its oldest age, the queue
  depth and the backends' health. Every API pod exports the same values: aggregate them
  with ``max``, never ``sum``, across pods.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from lg_deploy.api.deps import QueueDep, StoreDep
from lg_deploy.core.errors import BackendBusy, BackendUnavailable
from lg_deploy.core.states import Status

router = APIRouter()

UNFINISHED = (Status.QUEUED, Status.RUNNING, Status.INTERRUPTED)

SUBMITTED = Counter(
    "lg_deploy_executions_submitted",
    "New executions accepted (idempotent replays not counted).",
    ["graph_id"],
)
CANCELLED = Counter(
    "lg_deploy_executions_cancelled", "Executions cancelled through the API.", ["graph_id"]
)
REQUESTS = Counter(
    "lg_deploy_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
REQUEST_SECONDS = Histogram(
    "lg_deploy_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


def prepare(graph_ids: Iterable[str]) -> None:
    """Every graph's counters exist from the start, at zero (see worker/metrics.py)."""
    for graph_id in graph_ids:
        SUBMITTED.labels(graph_id)
        CANCELLED.labels(graph_id)


@router.api_route("/metrics", methods=["GET", "HEAD"], include_in_schema=False)
async def metrics(request: Request, store: StoreDep, queue: QueueDep) -> Response:
    deployment = CollectorRegistry()
    up = Gauge(
        "lg_deploy_backend_up",
        "1 when the backend answers this API process's check.",
        ["backend"],
        registry=deployment,
    )
    executions = Gauge(
        "lg_deploy_executions",
        "Unfinished executions by graph and status (the store's count; the same from every "
        "API pod: aggregate with max).",
        ["graph_id", "status"],
        registry=deployment,
    )
    runnable = Gauge(
        "lg_deploy_executions_runnable",
        "QUEUED executions that may run now, by graph (retries in backoff excluded).",
        ["graph_id"],
        registry=deployment,
    )
    oldest = Gauge(
        "lg_deploy_oldest_runnable_age_seconds",
        "How long the oldest runnable execution has waited since it became runnable, by graph.",
        ["graph_id"],
        registry=deployment,
    )
    depth = Gauge(
        "lg_deploy_queue_depth",
        "Jobs in the queue backend (ARQ: waiting, deferred and running).",
        registry=deployment,
    )
    # Every graph this API serves has its series, zero included: a panel or an alert on a
    # quiet graph sees 0, not "no data".
    for graph_id in request.app.state.registry.graphs:
        for status in UNFINISHED:
            executions.labels(graph_id, status.value).set(0)
        runnable.labels(graph_id).set(0)
        oldest.labels(graph_id).set(0)
    try:
        overview = await store.overview()
        for (graph_id, status), count in overview.unfinished.items():
            executions.labels(graph_id, status.value).set(count)
        for graph_id, count in overview.runnable.items():
            runnable.labels(graph_id).set(count)
            oldest.labels(graph_id).set(overview.oldest_runnable_age_s[graph_id])
        up.labels("database").set(1)
    except BackendBusy:
        up.labels("database").set(1)  # it answers, only not to this busy process
    except BackendUnavailable:
        up.labels("database").set(0)
    try:
        depth.set(await queue.depth())
        up.labels("queue").set(1)
    except BackendUnavailable:
        up.labels("queue").set(0)
    own: CollectorRegistry = request.app.state.metrics_registry
    body = generate_latest(deployment) + generate_latest(own)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
