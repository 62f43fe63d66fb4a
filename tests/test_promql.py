"""The PromQL reader of observability/promql.py: which metrics an expression, the
dashboard and the rules read."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from observability import ROOT
from observability.promql import (
    PromQLError,
    committed_metric_families,
    dashboard_expressions,
    exposed_metric_families,
    family_name,
    metric_names,
    rule_expressions,
    selectors,
    used_metric_families,
)


def test_a_bare_selector_and_one_with_matchers_name_their_metric() -> None:
    """A metric name is found with or without a label matcher block."""
    assert metric_names("lg_deploy_queue_depth") == {"lg_deploy_queue_depth"}
    assert metric_names('lg_deploy_executions{status="QUEUED", graph_id=~"a|b"}') == {
        "lg_deploy_executions"
    }


def test_functions_aggregations_and_label_names_are_not_metrics() -> None:
    """Function and aggregation names, label names inside matchers and grouping lists
    (before or after the aggregated expression, in any case) are left out."""
    expr = (
        'sum by (graph_id, status) (rate(a_total{route="/x"}[5m]))'
        " + max(b) without (instance) - COUNT(c) BY (le)"
    )
    assert metric_names(expr) == {"a_total", "b", "c"}


def test_vector_matching_keywords_and_their_label_lists_are_skipped() -> None:
    """on, ignoring, group_left, group_right and their label lists are not metrics."""
    expr = "a * on (instance) group_left (pod) b / ignoring (le) group_right c"
    assert metric_names(expr) == {"a", "b", "c"}


def test_set_operators_bool_offset_and_at_modifiers_are_skipped() -> None:
    """and/or/unless, bool, offset with a duration and @ with start() are not metrics."""
    expr = "a offset 5m > bool 1 unless b @ start() or c offset -1h30m and d @ 1609746000"
    assert metric_names(expr) == {"a", "b", "c", "d"}


def test_strings_numbers_and_durations_are_skipped() -> None:
    """String arguments (which may look like metrics), numbers in every notation and
    range and subquery durations are not metrics."""
    expr = (
        'label_replace(a, "dst", "not_a_metric", "src", "(.*)") * 1e3 + 0x1F - Inf + NaN'
        ' + deriv(sum(b)[15m:1m]) + quantile(0.9, c) + count_values("value", d)'
    )
    assert metric_names(expr) == {"a", "b", "c", "d"}


def test_grafana_variables_and_comments_are_skipped() -> None:
    """$var, ${var}, Grafana's interval macros and # comments are not metrics."""
    expr = (
        'sum(rate(a_total{graph_id=~"$graph_id"}[$__rate_interval])) # per second\n'
        "/ sum(increase(b_total[${__range}])) * $scale"
    )
    assert metric_names(expr) == {"a_total", "b_total"}


def test_a_name_given_as_a_matcher_is_found() -> None:
    """{__name__="x"} and a quoted name standing alone in the braces name the metric."""
    assert metric_names('rate({__name__="a_total", job="w"}[1m])') == {"a_total"}
    assert metric_names('{"b.with.dots", job="w"}') == {"b.with.dots"}


def test_metric_names_may_contain_colons() -> None:
    """Recording-rule style names with colons are one metric name."""
    assert metric_names("job:lg_deploy_requests:rate5m > 1") == {"job:lg_deploy_requests:rate5m"}


def test_a_histogram_series_maps_to_its_family() -> None:
    """_bucket, _sum and _count belong to the histogram's name."""
    expr = (
        "histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket[5m])))"
        " + rate(h_seconds_sum[5m]) / rate(h_seconds_count[5m])"
    )
    assert {family_name(name) for name in metric_names(expr)} == {"h_seconds"}


def test_a_counter_keeps_its_total_suffix() -> None:
    """A counter's family name is its _total name, as its # TYPE line and the docs say."""
    assert family_name("lg_deploy_http_requests_total") == "lg_deploy_http_requests_total"
    assert family_name("lg_deploy_queue_depth") == "lg_deploy_queue_depth"


def test_a_selector_knows_the_innermost_aggregation_over_it() -> None:
    """Selector.aggregation is the nearest aggregation operator, through functions and
    subqueries; None when there is none."""
    found = selectors(
        "sum(max by (graph_id) (a)) + deriv(MAX(b)[5m:1m]) + rate(c_total[5m])"
        " + sum by (le) (rate(d_bucket[5m])) + max_over_time(e[5m])"
    )
    assert [(s.metric, s.aggregation) for s in found] == [
        ("a", "max"),
        ("b", "max"),
        ("c_total", None),
        ("d_bucket", "sum"),
        ("e", None),
    ]
    assert found[0].enclosing == ("sum", "max")


@pytest.mark.parametrize("expr", ["sum(rate(a[5m])", "a)", "rate(a[5m)", 'a{b="c"', "a ; b"])
def test_a_malformed_expression_raises(expr: str) -> None:
    """Unbalanced brackets and characters PromQL does not have raise PromQLError."""
    with pytest.raises(PromQLError):
        selectors(expr)


def test_dashboard_expressions_come_from_panels_rows_variables_and_annotations() -> None:
    """Targets of panels and of collapsed rows' panels, the selector of a label_values
    variable (not its label), query_result variables and annotation queries are read;
    label_values(label) and other variable types add nothing."""
    dashboard = {
        "panels": [
            {"type": "timeseries", "targets": [{"expr": "a"}, {"expr": ""}, {"refId": "B"}]},
            {"type": "row", "collapsed": True, "panels": [{"targets": [{"expr": "b"}]}]},
        ],
        "templating": {
            "list": [
                {"type": "datasource", "query": "prometheus"},
                {"type": "query", "query": 'label_values(c{x="1", y="2"}, graph_id)'},
                {"type": "query", "query": {"query": "query_result(max(d))", "refId": "V"}},
                {"type": "query", "query": "label_values(graph_id)"},
                {"type": "query", "query": "label_names()"},
                {"type": "custom", "query": "not_promql,at_all"},
            ]
        },
        "annotations": {"list": [{"expr": "changes(e[5m]) > 0"}, {"builtIn": 1}]},
    }
    expressions = dashboard_expressions(dashboard)
    assert set().union(*(metric_names(e) for e in expressions)) == {"a", "b", "c", "d", "e"}


def test_used_families_leave_out_what_the_rules_record() -> None:
    """A series a recording rule makes is Prometheus's, not an lg-deploy process's."""
    rules = {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {"record": "job:x:rate5m", "expr": "sum(rate(x_total[5m]))"},
                    {"alert": "A", "expr": "job:x:rate5m > 1 and h_seconds_count > 0"},
                ],
            }
        ]
    }
    dashboard = {"panels": [{"targets": [{"expr": "rate(h_seconds_bucket[1m])"}]}]}
    assert rule_expressions(rules) == [
        "sum(rate(x_total[5m]))",
        "job:x:rate5m > 1 and h_seconds_count > 0",
    ]
    assert used_metric_families(dashboard, rules) == {"x_total", "h_seconds"}


def test_exposed_families_match_what_prometheus_client_serves() -> None:
    """exposed_metric_families names a /metrics page's metrics as family_name does, so
    the two sets compare directly; a labelled metric without a sample is not exposed."""
    registry = CollectorRegistry()
    Counter("demo_requests_total", "c", ["route"], registry=registry).labels("/x").inc()
    Histogram("demo_wait_seconds", "h", registry=registry).observe(0.2)
    Gauge("demo_depth", "g", registry=registry).set(3)
    Gauge("demo_unused", "g", ["graph_id"], registry=registry)
    exposed = exposed_metric_families(generate_latest(registry).decode())
    assert {"demo_requests_total", "demo_wait_seconds", "demo_depth"} <= exposed
    assert "demo_unused" not in exposed
    used = {family_name(n) for n in metric_names("rate(demo_wait_seconds_sum[1m]) + demo_depth")}
    assert used <= exposed


def test_every_metric_the_dashboard_and_rules_use_is_documented() -> None:
    """Each metric family read by the committed dashboard and rules has a row in the
    metric tables of docs/observability.md (and only lg-deploy's own metrics are read)."""
    documented = set(
        re.findall(
            r"^\| `(lg_deploy_\w+)` \|",
            (ROOT / "docs" / "observability.md").read_text(),
            re.MULTILINE,
        )
    )
    used = committed_metric_families()
    assert used, "the dashboard and the rules read no metric at all"
    assert used - documented == set()
