"""What a worker reports to Prometheus (docs/observability.md lists every metric).

``lg-deploy worker`` serves them on its metrics port; in ``lg-deploy dev`` the API's
/metrics shows them. Graph ids are labels because they come from langgraph.json (a
bounded set); execution and thread ids never are.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import Counter, Gauge, Histogram

# Agent runs take from milliseconds to hours.
DURATION_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    7200,
    14400,
)

SLOTS = Gauge("lg_deploy_worker_slots", "Executions this worker may run at once.")
SLOTS_BUSY = Gauge("lg_deploy_worker_slots_busy", "Attempts running in this worker now.")
UNCLAIMED = Counter(
    "lg_deploy_deliveries_unclaimed",
    "Deliveries from the queue that found nothing to claim: already taken or cancelled, "
    "its thread busy, or the same job delivered twice.",
)
ATTEMPTS_STARTED = Counter(
    "lg_deploy_attempts_started", "Attempts this worker claimed and started.", ["graph_id"]
)
FINISHED = Counter(
    "lg_deploy_executions_finished",
    "Results this worker recorded, by final status (COMPLETED, FAILED, INTERRUPTED).",
    ["graph_id", "status"],
)
FAILED = Counter(
    "lg_deploy_executions_failed",
    "Executions this worker failed, by error type (exception class, timeout, ...).",
    ["graph_id", "error_type"],
)
RETRIED = Counter(
    "lg_deploy_attempts_retried", "Failed attempts queued again for a retry.", ["graph_id"]
)
STOPPED = Counter(
    "lg_deploy_attempts_stopped",
    "Attempts stopped before their graph ended: cancelled, lease_lost, or handed back "
    "(shutdown, outage).",
    ["graph_id", "reason"],
)
QUEUE_WAIT = Histogram(
    "lg_deploy_queue_wait_seconds",
    "From when an execution became runnable (submitted, handed back, resumed, backoff "
    "over) to its claim.",
    ["graph_id"],
    buckets=DURATION_BUCKETS,
)
ATTEMPT_SECONDS = Histogram(
    "lg_deploy_attempt_duration_seconds",
    "How long attempts ran, from claim to end.",
    ["graph_id"],
    buckets=DURATION_BUCKETS,
)
RECOVERED = Counter(
    "lg_deploy_reconciler_recovered", "RUNNING executions whose lease expired, queued again."
)
ABANDONED = Counter(
    "lg_deploy_reconciler_abandoned",
    "Executions failed as worker_lost after their workers were lost too many times.",
)
REVIVED = Counter("lg_deploy_reconciler_revived", "Stranded QUEUED executions enqueued again.")
LAST_HEARTBEAT = Gauge(
    "lg_deploy_worker_last_heartbeat_timestamp_seconds",
    "When this worker last renewed its leases (unix time).",
)
LAST_RECONCILE = Gauge(
    "lg_deploy_worker_last_reconcile_timestamp_seconds",
    "When this worker's reconciler last completed a pass (unix time).",
)
LOOP_LAG = Gauge(
    "lg_deploy_event_loop_lag_seconds", "How late the worker's event loop last ran a timer."
)
LOOP_BLOCKED = Counter(
    "lg_deploy_event_loop_blocked",
    "Times a graph node blocked the worker's event loop past the warning threshold.",
    ["graph_id"],
)
PRUNED_EXECUTIONS = Counter(
    "lg_deploy_pruned_executions",
    "Executions this worker's prune passes deleted once their retention had passed.",
)
PRUNED_CHECKPOINTS = Counter(
    "lg_deploy_pruned_checkpoints",
    "Checkpoints this worker's prune passes deleted (with their writes and blobs).",
)
PRUNE_FAILURES = Counter(
    "lg_deploy_prune_failures", "Prune passes of this worker that failed (logged)."
)
LAST_PRUNE = Gauge(
    "lg_deploy_prune_last_success_timestamp_seconds",
    "When this worker last completed a prune pass (unix time); set when its pruning starts, "
    "0 when pruning is off.",
)
RETENTION_OVERDUE = Gauge(
    "lg_deploy_retention_overdue_seconds",
    "How long the oldest execution a prune pass may delete has waited past its "
    "delete_after, as this worker saw it after its last pass (0 while another worker's "
    "passes run): pruning falls behind as it grows.",
)


def prepare(graph_ids: Iterable[str]) -> None:
    """Give every graph its series at zero: Prometheus ignores the first increment of a
    series it has never seen, and a rate or an alert would miss it."""
    for graph_id in graph_ids:
        ATTEMPTS_STARTED.labels(graph_id)
        RETRIED.labels(graph_id)
        LOOP_BLOCKED.labels(graph_id)
        QUEUE_WAIT.labels(graph_id)
        ATTEMPT_SECONDS.labels(graph_id)
        for status in ("COMPLETED", "FAILED", "INTERRUPTED"):
            FINISHED.labels(graph_id, status)
        for reason in ("cancelled", "lease_lost", "shutdown", "outage"):
            STOPPED.labels(graph_id, reason)
