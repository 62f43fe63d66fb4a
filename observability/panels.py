"""Panel builders the dashboard is made of: every query goes to the dashboard's
Prometheus data source, every per-graph selector follows the graph_id variable."""

from __future__ import annotations

from collections.abc import Sequence

from grafana_foundation_sdk.builders import common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as grafana
from grafana_foundation_sdk.cog import builder as cog
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
GRAPH_MATCHER = 'graph_id=~"$graph_id"'
RATE = "[$__rate_interval]"

DEDUPED = (
    " Deployment-level gauge: every API pod computes it from the store and exports the "
    "same value, so the query takes the max across pods, never the sum."
)

Query = tuple[str, str]  # (PromQL, legend)


def graph_series(metric: str, *matchers: str) -> str:
    """A selector of ``metric`` limited to the graphs chosen in the graph_id variable."""
    return metric + "{" + ", ".join([*matchers, GRAPH_MATCHER]) + "}"


def percentiles(histogram: str, selector: str) -> list[Query]:
    """p50, p90 and p99 of a histogram, from its buckets summed over every other label."""
    return [
        (
            f"histogram_quantile({quantile}, sum by (le) "
            f"(rate({histogram}_bucket{selector}{RATE})))",
            f"p{round(quantile * 100)}",
        )
        for quantile in (0.5, 0.9, 0.99)
    ]


def _targets(queries: Sequence[Query], *, instant: bool) -> list[cog.Builder[variants.Dataquery]]:
    targets: list[cog.Builder[variants.Dataquery]] = []
    for index, (expr, legend) in enumerate(queries):
        target = (
            prometheus.Dataquery()
            .expr(expr)
            .legend_format(legend)
            .ref_id(chr(ord("A") + index))
            .datasource(DATASOURCE)
        )
        targets.append(target.instant() if instant else target.range())
    return targets


def thresholds(*steps: tuple[float | None, str]) -> grafana.ThresholdsConfig:
    """Colours from each value up; the first step's value is None (from minus infinity)."""
    return (
        grafana.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=value, color=color) for value, color in steps])
    )


def timeseries_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    width: int = 12,
    ratio: bool = False,
    stacked: bool = False,
) -> timeseries.Panel:
    """A time series panel of range queries; a ratio is drawn between 0 and 1."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries, instant=False))
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common.VizLegendOptions()
            .show_legend(True)
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
        )
        .tooltip(
            common.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    if ratio:
        panel = panel.min(0).max(1)
    else:
        panel = panel.min(0)
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(common_models.StackingMode.NORMAL))
    return panel


def stat_panel(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    thresholds: grafana.ThresholdsConfig,
    *,
    mappings: Sequence[models.ValueMapping] = (),
) -> stat.Panel:
    """A single-value panel of instant queries, coloured by its thresholds."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .targets(_targets(queries, instant=True))
        .unit(unit)
        .span(4)
        .height(4)
        .thresholds(thresholds)
        .mappings(list(mappings))
        .color_mode(common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(common_models.BigValueGraphMode.NONE)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]))
    )
