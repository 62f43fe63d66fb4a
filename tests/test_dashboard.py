"""The Grafana dashboard: the committed JSON is what observability/dashboard.py
generates, and its queries follow the rules docs/observability.md states."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from observability import DASHBOARD_PATH, DEPLOYMENT_GAUGES, ROOT
from observability.dashboard import render
from observability.promql import family_name, selectors


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The committed dashboard."""
    loaded: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row."""
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel


def test_committed_json_is_what_the_generator_writes() -> None:
    """Regenerating the dashboard in memory gives the committed file byte for byte."""
    assert render() == DASHBOARD_PATH.read_text(), (
        "helm/lg-deploy/files/dashboards/lg-deploy.json is out of date: "
        "run .venv/bin/python -m observability.dashboard"
    )


def test_the_variables_are_a_prometheus_datasource_and_a_multi_value_graph(
    dashboard: dict[str, Any],
) -> None:
    """datasource picks a Prometheus data source; graph_id is multi-select with All,
    listed from the submitted counter."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(variables) == {"datasource", "graph_id"}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    graph = variables["graph_id"]
    assert graph["type"] == "query"
    assert graph["query"] == "label_values(lg_deploy_executions_submitted_total, graph_id)"
    assert graph["datasource"]["uid"] == "${datasource}"
    assert graph["multi"] is True
    assert graph["includeAll"] is True


def test_every_panel_and_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    """No panel or query is tied to one Grafana's data source."""
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["refId"], panel["title"]


def test_panel_ids_are_unique_and_panels_fit_the_grid(dashboard: dict[str, Any]) -> None:
    """Grafana needs distinct panel ids; no panel overflows the 24-column grid."""
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]


def test_deployment_gauges_are_read_with_max_and_the_panel_says_so(
    dashboard: dict[str, Any],
) -> None:
    """Every selector of a deployment-level gauge sits under a max (innermost
    aggregation), never a sum, and its panel's description explains why."""
    checked = 0
    for panel in panels(dashboard):
        for target in panel["targets"]:
            for selector in selectors(target["expr"]):
                if selector.metric in DEPLOYMENT_GAUGES:
                    checked += 1
                    assert selector.aggregation == "max", (panel["title"], target["expr"])
                    assert "max across pods" in panel["description"], panel["title"]
    assert checked >= len(DEPLOYMENT_GAUGES)


def test_per_graph_metrics_follow_the_graph_variable(dashboard: dict[str, Any]) -> None:
    """Every selector of a metric the docs list with a graph_id label filters on
    $graph_id."""
    docs = (ROOT / "docs" / "observability.md").read_text()
    per_graph = set(
        re.findall(r"^\| `(lg_deploy_\w+)` \| \w+ \| [^|]*graph_id[^|]* \|", docs, re.MULTILINE)
    )
    assert "lg_deploy_queue_wait_seconds" in per_graph
    for panel in panels(dashboard):
        for target in panel["targets"]:
            for selector in selectors(target["expr"]):
                if family_name(selector.metric) not in per_graph:
                    continue
                for match in re.finditer(rf"\b{selector.metric}\b(\{{[^}}]*\}})?", target["expr"]):
                    assert 'graph_id=~"$graph_id"' in (match.group(1) or ""), (
                        panel["title"],
                        match.group(),
                    )


def test_every_panel_is_described_in_the_docs(dashboard: dict[str, Any]) -> None:
    """docs/observability.md's panel table names every panel of the dashboard."""
    docs = (ROOT / "docs" / "observability.md").read_text()
    documented = set(re.findall(r"^\| [^|]+ \| ([^|]+) \| [^|]+ \|$", docs, re.MULTILINE))
    titles = {panel["title"] for panel in panels(dashboard)}
    assert titles - documented == set()
