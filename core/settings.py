"""Configuration, read from ``LG_DEPLOY_*`` environment variables (and a ``.env`` file).

The class is defined here; only the entry points (the CLI) instantiate it, and pass the
values down as arguments. Nothing in ``lg_deploy.core`` reads the environment itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from lg_deploy.core.retention import Retention, RetentionPolicy, parse_graph_retention

if TYPE_CHECKING:
    from lg_deploy.core.graphs import GraphRegistry

DEFAULT_DATA_DIR = ".lg-deploy"


class Settings(BaseSettings):
    # "none" in an optional setting means None (a retention of none: kept for ever).
    model_config = SettingsConfigDict(
        env_prefix="LG_DEPLOY_", env_file=".env", extra="ignore", env_parse_none_str="none"
    )

    config: str | None = Field(
        default=None, description="Path to langgraph.json (default: ./langgraph.json)."
    )
    database_url: str | None = Field(
        default=None,
        description="sqlite+aiosqlite:///path or postgresql+asyncpg://user:pw@host/db "
        "(default: SQLite in ./.lg-deploy/).",
    )
    queue_url: str = Field(default="memory://", description="memory:// or redis://host:port/db.")
    host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    port: int = Field(default=8000, description="Port the API listens on.")
    worker_concurrency: int = Field(
        default=10, ge=1, description="Executions one worker runs at once."
    )
    worker_processes: int = Field(
        default=1,
        ge=1,
        description="lg-deploy worker processes under one command (--processes), each a whole "
        "worker on a core of its own; in Kubernetes keep 1 and scale the pods.",
    )
    execution_timeout_s: float = Field(
        default=3600.0, gt=0, description="Default per-attempt time limit of an execution."
    )
    lease_s: float = Field(
        default=15.0, gt=0, description="How long a worker's claim lasts without a heartbeat."
    )
    reconcile_interval_s: float = Field(
        default=5.0, gt=0, description="How often workers look for stranded executions."
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, gt=0, description="Largest request body the API accepts."
    )
    database_pool_size: int = Field(
        default=10,
        ge=1,
        description="Connections each API or worker process keeps to PostgreSQL for the "
        "store (the worker's checkpointer has a pool of its own of the same size).",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long the API waits for a request body to arrive in full (408 after).",
    )
    queue_name: str = Field(
        default="lg-deploy:queue", description="Redis key of the queue (one per deployment)."
    )
    queue_poll_s: float = Field(
        default=1.0,
        gt=0,
        description="How often an idle worker looks at the queue without being woken (Redis): "
        "enqueueing wakes idle workers at once; this only covers a lost wake-up.",
    )
    queue_read_limit: int = Field(
        default=1000,
        ge=1,
        description="Most jobs a worker takes from the queue in one round trip (Redis); it "
        "never takes more than it has free slots.",
    )
    max_queue_depth: int = Field(
        default=10000,
        ge=0,
        description="POST /execute answers 429 while the queue holds more (0: no limit).",
    )
    drain_s: float = Field(
        default=20.0,
        ge=0,
        description="On SIGTERM, how long running executions may finish before being "
        "handed back. Keep it under the pod's terminationGracePeriodSeconds.",
    )
    max_attempts: int = Field(
        default=3, ge=1, description="Attempts of a retryable failure, the first included."
    )
    max_recoveries: int = Field(
        default=10,
        ge=0,
        description="Times an execution is taken over after its worker was lost (lease "
        "expired) before it fails as worker_lost: a graph that kills its process every time "
        "must not crash the fleet forever.",
    )
    retry_on: str = Field(
        default="",
        description="Comma-separated error types to retry (e.g. timeout,ConnectionError); "
        "exceptions with retryable = True are retried too.",
    )
    retry_backoff_s: float = Field(
        default=1.0, ge=0, description="Wait before the first retry; doubles each time."
    )
    retry_backoff_max_s: float = Field(default=60.0, ge=0, description="Longest retry wait.")
    api_keys: str = Field(
        default="",
        description="Comma-separated keys; when set, every route but /healthz, /readyz and "
        "/metrics needs one (Authorization: Bearer or X-Api-Key).",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        description="lg-deploy worker serves Prometheus metrics on this port (0: off; the "
        "API serves them at /metrics).",
    )
    metrics_addr: str = Field(
        default="127.0.0.1", description="Address of the worker's metrics server."
    )
    api_workers: int = Field(default=1, ge=1, description="API server processes (lg-deploy api).")
    startup_timeout_s: float = Field(
        default=30.0,
        ge=0,
        description="How long lg-deploy api / worker retry an unreachable backend at start-up.",
    )
    ready_timeout_s: float = Field(
        default=2.0, gt=0, description="How long /readyz waits for each backend."
    )
    log_level: str = Field(default="INFO", description="Python logging level.")
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text (human-readable) or json (one object per line, with the request, "
        "execution, graph, thread and attempt the line is about).",
    )
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        default="auto",
        description="The asyncio event loop of the API and the workers: auto (uvloop where "
        "it is installed, as it is with lg-deploy on Linux and macOS), uvloop, or asyncio "
        "(Python's own, for a graph whose libraries need it).",
    )
    max_output_bytes: int = Field(
        default=4 * 1024 * 1024,
        gt=0,
        description="Largest result an execution may store (output and interrupts, as JSON); "
        "a larger one fails the execution as output_too_large.",
    )
    unknown_graph_grace_s: float = Field(
        default=300.0,
        ge=0,
        description="How long a worker that lacks an execution's graph (a rolling deploy) "
        "leaves it for a worker that has it, before failing it as unknown_graph.",
    )
    loop_warn_s: float = Field(
        default=1.0,
        gt=0,
        description="A worker logs the execution, graph and node that block its event loop "
        "for longer than this.",
    )
    loop_block_limit_s: float = Field(
        default=60.0,
        gt=0,
        description="A worker whose event loop stays blocked longer than this fails the "
        "execution that blocks it (event_loop_blocked), stops renewing leases so that other "
        "workers take its executions over, and fails its liveness probe.",
    )
    durability: Literal["sync", "async", "exit"] = Field(
        default="sync",
        description="LangGraph durability of every execution: sync (each step's checkpoint "
        "is written before the next step starts: after a crash only the step in flight runs "
        "again), async (written while the next step runs: up to two steps may run again), "
        "or exit (written only when the graph ends or pauses: a crash starts it over).",
    )
    retention_s: float | None = Field(
        default=30 * 24 * 3600.0,
        ge=0,
        description="How long a COMPLETED, FAILED or CANCELLED execution is kept after it "
        "finished, in seconds (none: for ever); a graph or a request may set its own.",
    )
    interrupted_retention_s: float | None = Field(
        default=None,
        ge=0,
        description="How long an INTERRUPTED execution (waiting for a person) is kept "
        "after it paused, in seconds (none, the default: for ever).",
    )
    graph_retention: str = Field(
        default="",
        description="Graphs' own retention over langgraph.json's: graph=seconds"
        "[/interrupted seconds],... each a number or none, e.g. agent=86400,approval=none/none.",
    )
    checkpoints_keep: int = Field(
        default=0,
        ge=0,
        description="Checkpoints kept per namespace of a live thread, the newest (0: all); "
        "older ones are pruned. A thread whose last execution is pruned loses them all.",
    )
    prune_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="How often a worker runs a prune pass (one worker at a time; 0: never, "
        "prune with lg-deploy prune).",
    )
    prune_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="Executions deleted per statement (and per short transaction) of a pass.",
    )

    events_url: str | None = Field(
        default=None,
        description="Where runs' stream events go (LangGraph Platform API): memory:// or "
        "redis://host:port/db (default: the queue URL).",
    )
    events_prefix: str = Field(
        default="lg-deploy:events", description="Redis key prefix of the runs' event streams."
    )
    stream_maxlen: int = Field(
        default=10_000, ge=1, description="Events kept per run (the oldest go first)."
    )
    stream_ttl_s: float = Field(
        default=3600.0,
        gt=0,
        description="A run's events are dropped this long after its last event.",
    )
    stream_heartbeat_s: float = Field(
        default=5.0,
        gt=0,
        description="An idle SSE stream or long wait sends a keep-alive this often.",
    )

    @field_validator("graph_retention")
    @classmethod
    def _graph_retention_parses(cls, value: str) -> str:
        parse_graph_retention(value)
        return value

    def retention_policy(self, registry: GraphRegistry | None = None) -> RetentionPolicy:
        """The deployment's retention, each graph's own from langgraph.json under what
        ``graph_retention`` says."""
        graphs: dict[str, dict[str, float | None]] = {}
        for graph_id, spec in (registry.graphs if registry else {}).items():
            graphs[graph_id] = dict(spec.retention)
        for graph_id, own in parse_graph_retention(self.graph_retention).items():
            graphs[graph_id] = graphs.get(graph_id, {}) | own
        return RetentionPolicy(Retention(self.retention_s, self.interrupted_retention_s), graphs)

    def resolved_events_url(self) -> str:
        return self.events_url or self.queue_url

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{DEFAULT_DATA_DIR}/lg-deploy.db"

    def api_key_set(self) -> frozenset[str]:
        return frozenset(k.strip() for k in self.api_keys.split(",") if k.strip())

    def retry_on_set(self) -> frozenset[str]:
        return frozenset(t.strip() for t in self.retry_on.split(",") if t.strip())
