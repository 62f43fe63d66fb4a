"""What workers count, for Prometheus: executions finished, their duration, and those
running now. In ``lg-deploy dev`` the API's /metrics shows them; ``lg-deploy worker``
serves them on its own port (``LG_DEPLOY_METRICS_PORT``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ATTEMPTS_FINISHED = Counter(
    "lg_deploy_attempts_finished",
    "Attempts that ended, by graph and by how they ended: COMPLETED, FAILED (retried or "
    "not), INTERRUPTED, handed_back, or stopped (cancelled, lease lost).",
    ["graph_id", "outcome"],
)
ATTEMPT_SECONDS = Histogram(
    "lg_deploy_attempt_duration_seconds",
    "How long attempts ran, from claim to end, by graph.",
    ["graph_id"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600),
)
RUNNING = Gauge("lg_deploy_attempts_running", "Attempts running in this worker now.")
