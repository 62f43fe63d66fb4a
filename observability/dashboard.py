"""The Grafana dashboard of lg-deploy, built with Grafana's grafana-foundation-sdk.

``python -m observability.dashboard`` writes it to
helm/lg-deploy/files/dashboards/lg-deploy.json (``--check`` only compares);
tests/test_dashboard.py fails when the committed file and this code differ. The panels
and why the deployment-level gauges are read with ``max`` are in docs/observability.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from grafana_foundation_sdk.builders import dashboard as grafana
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models

from observability import DASHBOARD_PATH
from observability.panels import (
    DATASOURCE,
    DEDUPED,
    GRAPH_MATCHER,
    RATE,
    graph_series,
    percentiles,
    stat_panel,
    thresholds,
    timeseries_panel,
)

UID = "lg-deploy"
FINISHED = "lg_deploy_executions_finished_total"
# The long-poll route answers after up to `timeout` seconds by design: it would drown the
# latency of everything else.
LONG_POLL_ROUTE = "/executions/{execution_id}/wait"


def overview() -> list[stat.Panel]:
    """What an operator looks at first: is work waiting, is it failing, is anyone working."""
    completed = graph_series(FINISHED, 'status="COMPLETED"')
    outcomes = graph_series(FINISHED, 'status=~"COMPLETED|FAILED"')
    return [
        stat_panel(
            "Runnable executions",
            "QUEUED executions that could start now (not waiting out a retry's backoff), "
            "all selected graphs." + DEDUPED + " The max is taken per graph, then the "
            "graphs are added up.",
            "none",
            [(f"sum(max by (graph_id) ({graph_series('lg_deploy_executions_runnable')}))", "")],
            thresholds((None, "green"), (100, "orange")),
        ),
        stat_panel(
            "Oldest runnable wait",
            "How long the oldest runnable QUEUED execution has waited since it became "
            "runnable (0 when none waits). The LgDeployExecutionsWaitingTooLong alert "
            "fires past 10 minutes." + DEDUPED,
            "s",
            [(f"max({graph_series('lg_deploy_oldest_runnable_age_seconds')})", "")],
            thresholds((None, "green"), (60, "orange"), (600, "red")),
        ),
        stat_panel(
            "Success ratio",
            "COMPLETED / (COMPLETED + FAILED) of the executions that finished in the "
            "selected time range (INTERRUPTED is a pause, not an outcome).",
            "percentunit",
            [
                (
                    f"sum(increase({completed}[$__range])) / sum(increase({outcomes}[$__range]))",
                    "",
                )
            ],
            thresholds((None, "red"), (0.8, "orange"), (0.95, "green")),
        ),
        stat_panel(
            "Live workers",
            "Worker processes Prometheus scrapes now (those exporting lg_deploy_worker_slots; "
            "a worker that stops answering scrapes drops out at once).",
            "none",
            [("count(lg_deploy_worker_slots) or vector(0)", "")],
            thresholds((None, "red"), (1, "green")),
        ),
        stat_panel(
            "Worker saturation",
            "Busy slots / configured slots over the whole fleet. Near 100%, new work waits "
            "for a free slot: add workers.",
            "percentunit",
            [("sum(lg_deploy_worker_slots_busy) / sum(lg_deploy_worker_slots)", "")],
            thresholds((None, "green"), (0.8, "orange"), (0.95, "red")),
        ),
        stat_panel(
            "Backend health",
            "Whether the database and the queue answer the API pods' checks; DOWN when at "
            "least one API pod's check fails (the API row shows which pod).",
            "none",
            [("min by (backend) (lg_deploy_backend_up)", "{{backend}}")],
            thresholds((None, "red"), (1, "green")),
            mappings=[
                models.ValueMap(
                    options={
                        "0": models.ValueMappingResult(text="DOWN", color="red"),
                        "1": models.ValueMappingResult(text="UP", color="green"),
                    }
                )
            ],
        ),
    ]


def executions() -> list[timeseries.Panel]:
    """Work coming in and going out, per graph."""
    completed = graph_series(FINISHED, 'status="COMPLETED"')
    outcomes = graph_series(FINISHED, 'status=~"COMPLETED|FAILED"')
    return [
        timeseries_panel(
            "Throughput",
            "Executions accepted by the API (idempotent replays not counted), attempts "
            "started by workers, and executions finished by final status, per second.",
            "ops",
            [
                (
                    f"sum(rate({graph_series('lg_deploy_executions_submitted_total')}{RATE}))",
                    "submitted",
                ),
                (
                    f"sum(rate({graph_series('lg_deploy_attempts_started_total')}{RATE}))",
                    "attempts started",
                ),
                (f"sum by (status) (rate({graph_series(FINISHED)}{RATE}))", "finished {{status}}"),
            ],
        ),
        timeseries_panel(
            "Success ratio",
            "COMPLETED / (COMPLETED + FAILED) per graph, over the rate interval. Empty while "
            "a graph finishes nothing.",
            "percentunit",
            [
                (
                    f"sum by (graph_id) (rate({completed}{RATE}))"
                    f" / sum by (graph_id) (rate({outcomes}{RATE}))",
                    "{{graph_id}}",
                )
            ],
            ratio=True,
        ),
        timeseries_panel(
            "Unfinished executions by status",
            "QUEUED, RUNNING and INTERRUPTED executions in the store, selected graphs."
            + DEDUPED
            + " The max is taken per graph and status, then the graphs are added up.",
            "none",
            [
                (
                    "sum by (status) (max by (graph_id, status) "
                    f"({graph_series('lg_deploy_executions')}))",
                    "{{status}}",
                )
            ],
            stacked=True,
        ),
        timeseries_panel(
            "Retries, hand-backs and cancellations",
            "Failed attempts retried after a backoff; attempts stopped by reason "
            "(shutdown and outage hand the execution back to the queue; cancelled and "
            "lease_lost end the attempt); executions cancelled through the API.",
            "ops",
            [
                (
                    f"sum by (graph_id) (rate({graph_series('lg_deploy_attempts_retried_total')}"
                    f"{RATE}))",
                    "retried {{graph_id}}",
                ),
                (
                    f"sum by (reason) (rate({graph_series('lg_deploy_attempts_stopped_total')}"
                    f"{RATE}))",
                    "stopped: {{reason}}",
                ),
                (
                    f"sum(rate({graph_series('lg_deploy_executions_cancelled_total')}{RATE}))",
                    "cancelled through the API",
                ),
            ],
        ),
    ]


def queue() -> list[timeseries.Panel]:
    """How much waits, for how long, and how long it then runs."""
    return [
        timeseries_panel(
            "Queue depth and runnable executions",
            "Jobs in the queue backend (ARQ counts waiting, deferred and running jobs; all "
            "graphs) and runnable QUEUED executions per graph." + DEDUPED,
            "none",
            [
                ("max(lg_deploy_queue_depth)", "queue jobs (all graphs)"),
                (
                    f"max by (graph_id) ({graph_series('lg_deploy_executions_runnable')})",
                    "runnable {{graph_id}}",
                ),
            ],
        ),
        timeseries_panel(
            "Oldest runnable execution",
            "Age of the oldest runnable QUEUED execution per graph, since it became "
            "runnable; a steady climb means nothing takes work." + DEDUPED,
            "s",
            [
                (
                    f"max by (graph_id) ({graph_series('lg_deploy_oldest_runnable_age_seconds')})",
                    "{{graph_id}}",
                )
            ],
        ),
        timeseries_panel(
            "Queue wait",
            "From runnable (created, resumed, retry backoff over, handed back) to claimed "
            "by a worker: percentiles over the selected graphs.",
            "s",
            percentiles("lg_deploy_queue_wait_seconds", "{" + GRAPH_MATCHER + "}"),
        ),
        timeseries_panel(
            "Run time",
            "Attempt duration, from claim to end: percentiles over the selected graphs.",
            "s",
            percentiles("lg_deploy_attempt_duration_seconds", "{" + GRAPH_MATCHER + "}"),
        ),
    ]


def failures() -> list[timeseries.Panel]:
    """What fails and why."""
    return [
        timeseries_panel(
            "Failures by graph and error type",
            "Executions that ended FAILED, per second, by graph and error type (the "
            "exception class name, or timeout, unknown_graph, output_too_large, worker_lost...).",
            "ops",
            [
                (
                    "sum by (graph_id, error_type) "
                    f"(rate({graph_series('lg_deploy_executions_failed_total')}{RATE}))",
                    "{{graph_id}}: {{error_type}}",
                )
            ],
            width=24,
            stacked=True,
        ),
    ]


def workers() -> list[timeseries.Panel]:
    """How full and how healthy the fleet is."""
    return [
        timeseries_panel(
            "Worker saturation",
            "Busy slots / configured slots: the fleet, and each worker.",
            "percentunit",
            [
                ("sum(lg_deploy_worker_slots_busy) / sum(lg_deploy_worker_slots)", "fleet"),
                ("lg_deploy_worker_slots_busy / lg_deploy_worker_slots", "{{instance}}"),
            ],
            width=6,
            ratio=True,
        ),
        timeseries_panel(
            "Worker slots",
            "Slots configured (concurrency) and busy (attempts running), fleet-wide.",
            "none",
            [
                ("sum(lg_deploy_worker_slots)", "configured"),
                ("sum(lg_deploy_worker_slots_busy)", "busy"),
            ],
            width=6,
        ),
        timeseries_panel(
            "Live workers",
            "Worker processes Prometheus scrapes (those exporting lg_deploy_worker_slots).",
            "none",
            [("count(lg_deploy_worker_slots)", "workers")],
            width=6,
        ),
        timeseries_panel(
            "Time since heartbeat and reconcile",
            "Per worker, seconds since its last successful lease renewal pass and its last "
            "successful reconciler pass. Climbing lines: the worker cannot reach the "
            "database, or a loop of it has stopped.",
            "s",
            [
                (
                    "time() - lg_deploy_worker_last_heartbeat_timestamp_seconds",
                    "heartbeat {{instance}}",
                ),
                (
                    "time() - lg_deploy_worker_last_reconcile_timestamp_seconds",
                    "reconcile {{instance}}",
                ),
            ],
            width=6,
        ),
    ]


def reconciler_and_event_loop() -> list[timeseries.Panel]:
    """What the reconcilers repair, and whether graphs block the workers' event loops."""
    return [
        timeseries_panel(
            "Reconciler activity",
            "Per minute, fleet-wide: RUNNING executions whose lease expired, queued again "
            "(their worker died or froze); executions failed as worker_lost after too many "
            "lost workers; QUEUED executions enqueued again because their job was lost.",
            "opm",
            [
                (
                    "sum(rate(lg_deploy_reconciler_recovered_total" + RATE + ")) * 60",
                    "recovered (lease expired)",
                ),
                (
                    "sum(rate(lg_deploy_reconciler_abandoned_total" + RATE + ")) * 60",
                    "abandoned (worker_lost)",
                ),
                (
                    "sum(rate(lg_deploy_reconciler_revived_total" + RATE + ")) * 60",
                    "revived (job lost)",
                ),
            ],
            width=8,
        ),
        timeseries_panel(
            "Event-loop lag",
            "Last measured lag of each worker's event loop. Lag delays cancellation and "
            "every other execution of that worker (leases are renewed from a thread of "
            "their own).",
            "s",
            [("lg_deploy_event_loop_lag_seconds", "{{instance}}")],
            width=8,
        ),
        timeseries_panel(
            "Event-loop blocks by graph",
            "Per minute: times a node of the graph blocked its worker's event loop past "
            "the warning threshold (synchronous work in an async node).",
            "opm",
            [
                (
                    "sum by (graph_id) "
                    f"(rate({graph_series('lg_deploy_event_loop_blocked_total')}{RATE})) * 60",
                    "{{graph_id}}",
                )
            ],
            width=8,
        ),
    ]


def api() -> list[timeseries.Panel]:
    """What the API answers, and how fast."""
    requests = "lg_deploy_http_requests_total"
    return [
        timeseries_panel(
            "API requests",
            "Requests per second by route template and status code, all API processes "
            '(route "unmatched": paths that match no route).',
            "reqps",
            [(f"sum by (route, status) (rate({requests}{RATE}))", "{{status}} {{route}}")],
            width=6,
        ),
        timeseries_panel(
            "API latency",
            f"Request duration percentiles, every route but the long poll {LONG_POLL_ROUTE} "
            "(it waits for the execution by design).",
            "s",
            percentiles(
                "lg_deploy_http_request_duration_seconds", '{route!="' + LONG_POLL_ROUTE + '"}'
            ),
            width=6,
        ),
        timeseries_panel(
            "API 5xx ratio",
            "Share of requests answered with a 5xx status (503 while a backend is down). "
            "The LgDeployApiErrorRatioHigh alert fires above 5%.",
            "percentunit",
            [
                (
                    # "or vector(0)": no 5xx series at all is a ratio of 0, not "no data".
                    f'(sum(rate({requests}{{status=~"5.."}}{RATE})) or vector(0))'
                    f" / sum(rate({requests}{RATE}))",
                    "5xx",
                )
            ],
            width=6,
        ),
        timeseries_panel(
            "Backend health by API pod",
            "1 when the backend answered this API pod's check at scrape time, 0 when not.",
            "none",
            [("lg_deploy_backend_up", "{{backend}} {{instance}}")],
            width=6,
            ratio=True,
        ),
    ]


def build() -> models.Dashboard:
    """The dashboard model, panels numbered in order."""
    builder = (
        grafana.Dashboard("lg-deploy")
        .uid(UID)
        .description(
            "LangGraph executions on lg-deploy: throughput, queue, failures, workers, API."
        )
        .tags(["lg-deploy", "langgraph"])
        .editable()
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .time("now-3h", "now")
        .refresh("30s")
        .annotation(
            grafana.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(models.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1)
        )
        .with_variable(
            grafana.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(
            grafana.QueryVariable("graph_id")
            .label("Graph")
            .datasource(DATASOURCE)
            .query("label_values(lg_deploy_executions_submitted_total, graph_id)")
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            # Every graph, also one that submitted nothing in the time range.
            .all_value(".*")
        )
    )
    rows: list[tuple[str, Sequence[stat.Panel | timeseries.Panel]]] = [
        ("Overview", overview()),
        ("Executions", executions()),
        ("Queue", queue()),
        ("Failures", failures()),
        ("Workers", workers()),
        ("Reconciler and event loop", reconciler_and_event_loop()),
        ("API", api()),
    ]
    for title, panels in rows:
        builder = builder.with_row(grafana.Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    model = builder.build()
    for number, built in enumerate(model.panels or [], start=1):
        built.id_val = number
    return model


def render() -> str:
    """The dashboard as the JSON text committed to the chart."""
    return json.dumps(build(), cls=JSONEncoder, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m observability.dashboard", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="only report whether the committed file is current"
    )
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DASHBOARD_PATH.is_file() and DASHBOARD_PATH.read_text() == text
        print(f"{DASHBOARD_PATH}: {'up to date' if current else 'out of date'}")
        return 0 if current else 1
    DASHBOARD_PATH.parent.mkdir(parents=True, exist_ok=True)
    DASHBOARD_PATH.write_text(text)
    print(f"wrote {DASHBOARD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
