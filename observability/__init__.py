"""Operator tooling kept next to the code it watches: the Grafana dashboard generator
(``python -m observability.dashboard``) and a PromQL reader for the dashboard and the
Prometheus rules. Not installed with lg-deploy; docs/observability.md explains both."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_PATH = ROOT / "helm" / "lg-deploy" / "files" / "dashboards" / "lg-deploy.json"
RULES_PATH = ROOT / "helm" / "lg-deploy" / "files" / "prometheus" / "lg-deploy-rules.yaml"

# Computed from the store at scrape time: every API pod exports the same values, so a
# query over them takes the max across pods (a sum would count each pod once more).
DEPLOYMENT_GAUGES = frozenset(
    {
        "lg_deploy_executions",
        "lg_deploy_executions_runnable",
        "lg_deploy_oldest_runnable_age_seconds",
        "lg_deploy_queue_depth",
    }
)
