"""Which metrics the dashboard and the alert rules read, found by reading their PromQL.

A tokenizer and a walk over its tokens: enough to tell metric names from functions,
aggregation operators, keywords (``and``, ``offset``, ``bool``...), label names (inside
selectors and in by/without/on/ignoring/group_left/group_right lists), numbers,
durations, range and subquery brackets, strings, comments and Grafana's template
variables (``$graph_id``, ``${datasource}``, ``$__rate_interval``). It does not
validate an expression: Prometheus and promtool do that.

Names come in two forms. A *series name* is what an expression selects
(``lg_deploy_queue_wait_seconds_bucket``); a *family name* is the metric as the
``# TYPE`` line of /metrics and docs/observability.md name it: a histogram's
``_bucket``, ``_sum`` and ``_count`` series belong to the histogram's name, a counter
keeps its ``_total``. The test that every metric used is exported compares
``used_metric_families`` (or ``committed_metric_families``) with
``exposed_metric_families`` of each process's /metrics page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from observability import DASHBOARD_PATH, RULES_PATH

# Aggregation operators and keywords are case-insensitive in PromQL; function names are not.
AGGREGATIONS = frozenset(
    {
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "limitk",
        "limit_ratio",
    }
)
# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
# The series of a histogram (or summary) besides the family name itself.
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_TOKEN = re.compile(
    r"""
      (?P<space>\s+|\#[^\n]*)
    | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<variable>\$\{[^}]*\}|\$\w+)
    | (?P<duration>(?:\d+(?:ms|[smhdwy]))+(?![\w:]))
    | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<identifier>[A-Za-z_:][\w:]*)
    | (?P<punctuation>==|!=|<=|>=|=~|!~|[-+*/%^<>=@,(){}\[\]])
    """,
    re.VERBOSE,
)
_SAMPLE_NAME = re.compile(r"[A-Za-z_:][\w:]*")


class PromQLError(ValueError):
    """An expression that cannot be tokenized or whose brackets do not balance."""


@dataclass(frozen=True)
class Selector:
    """One vector selector: the series name it selects, and the functions and
    aggregations around it, outermost first (aggregations lower-cased)."""

    metric: str
    enclosing: tuple[str, ...]

    @property
    def aggregation(self) -> str | None:
        """The innermost aggregation operator applied to this selector, or None."""
        for name in reversed(self.enclosing):
            if name in AGGREGATIONS:
                return name
        return None


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


def _tokenize(expr: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise PromQLError(f"unexpected {expr[position]!r} at {position} in {expr!r}")
        assert match.lastgroup is not None
        if match.lastgroup != "space":
            tokens.append(_Token(match.lastgroup, match.group()))
        position = match.end()
    return tokens


def _skip_brackets(tokens: Sequence[_Token], start: int, expr: str) -> int:
    """The index after the bracket that closes the one at ``start``."""
    opening = tokens[start].text
    closing = {"(": ")", "[": "]", "{": "}"}[opening]
    depth = 0
    for index in range(start, len(tokens)):
        if tokens[index].kind != "punctuation":
            continue
        if tokens[index].text == opening:
            depth += 1
        elif tokens[index].text == closing:
            depth -= 1
            if depth == 0:
                return index + 1
    raise PromQLError(f"unclosed {opening!r} in {expr!r}")


def _name_from_matchers(tokens: Sequence[_Token], start: int, expr: str) -> tuple[str | None, int]:
    """The metric name a ``{...}`` block gives (``__name__="x"``, or a quoted ``"x"``
    standing alone), and the index after its ``}``."""
    end = _skip_brackets(tokens, start, expr)
    inner = tokens[start + 1 : end - 1]
    items: list[list[_Token]] = [[]]
    for token in inner:
        if token.kind == "punctuation" and token.text == ",":
            items.append([])
        else:
            items[-1].append(token)
    for item in items:
        if len(item) == 1 and item[0].kind == "string":
            return item[0].text[1:-1], end
        if len(item) == 3 and item[0].text == "__name__" and item[1].text == "=":
            return item[2].text[1:-1], end
    return None, end


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of a PromQL expression that names its metric, in order."""
    tokens = _tokenize(expr)
    found: list[Selector] = []
    calls: list[str | None] = []  # what each open "(" belongs to; None: plain grouping
    pending: str | None = None  # a function or aggregation whose "(" is still to come

    def enclosing() -> tuple[str, ...]:
        return tuple(call for call in calls if call is not None)

    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1].text if index + 1 < len(tokens) else None
        if token.kind == "identifier":
            word = token.text.lower()
            if word in LABEL_LIST_KEYWORDS:
                if following == "(":
                    index = _skip_brackets(tokens, index + 1, expr)
                    continue
            elif word in AGGREGATIONS:
                pending = word
            elif word in KEYWORDS:
                pass
            elif following == "(":
                pending = token.text
            else:
                found.append(Selector(token.text, enclosing()))
                if following == "{":
                    index = _skip_brackets(tokens, index + 1, expr)
                    continue
        elif token.kind == "punctuation":
            if token.text == "{":
                name, index = _name_from_matchers(tokens, index, expr)
                if name is not None:
                    found.append(Selector(name, enclosing()))
                continue
            if token.text == "[":  # a range or a subquery: durations and variables only
                index = _skip_brackets(tokens, index, expr)
                continue
            if token.text == "(":
                calls.append(pending)
                pending = None
            elif token.text == ")":
                if not calls:
                    raise PromQLError(f"unbalanced ')' in {expr!r}")
                calls.pop()
        index += 1
    if calls:
        raise PromQLError(f"unclosed '(' in {expr!r}")
    return found


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects, as written."""
    return {selector.metric for selector in selectors(expr)}


def family_name(series: str) -> str:
    """The family a series name belongs to: ``x_bucket``, ``x_sum`` and ``x_count`` are
    the histogram ``x``; everything else (a counter's ``x_total`` too) is itself.
    Prometheus reserves these suffixes for histograms and summaries, so a gauge or a
    counter never ends with them."""
    for suffix in HISTOGRAM_SUFFIXES:
        if series.endswith(suffix) and len(series) > len(suffix):
            return series[: -len(suffix)]
    return series


def _variable_expression(query: str) -> str | None:
    """The PromQL inside a Grafana Prometheus variable query, if it has one:
    ``label_values(selector, label)`` and ``query_result(expr)`` do; ``label_values(label)``,
    ``label_names()`` and ``metrics(regex)`` name no series."""
    call = re.fullmatch(r"\s*(\w+)\s*\((.*)\)\s*", query, re.DOTALL)
    if call is None:
        return query if query.strip() else None
    function, body = call.groups()
    if function == "label_values":
        selector, comma, _label = body.rpartition(",")
        return selector if comma else None
    if function == "query_result":
        return body
    if function in ("label_names", "metrics"):
        return None
    return query


def dashboard_expressions(dashboard: Mapping[str, Any]) -> list[str]:
    """Every PromQL expression of a Grafana dashboard: its panels' targets (the panels
    of collapsed rows included), its query variables and its annotations."""
    expressions: list[str] = []

    def walk(panels: Iterable[Mapping[str, Any]]) -> None:
        for panel in panels:
            expressions.extend(t["expr"] for t in panel.get("targets") or [] if t.get("expr"))
            walk(panel.get("panels") or [])

    walk(dashboard.get("panels") or [])
    for variable in (dashboard.get("templating") or {}).get("list") or []:
        query = variable.get("query")
        if isinstance(query, Mapping):
            query = query.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            expression = _variable_expression(query)
            if expression is not None:
                expressions.append(expression)
    for annotation in (dashboard.get("annotations") or {}).get("list") or []:
        if annotation.get("expr"):
            expressions.append(annotation["expr"])
    return expressions


def rule_expressions(rules: Mapping[str, Any]) -> list[str]:
    """The ``expr`` of every alerting and recording rule of a Prometheus rules file."""
    return [str(rule["expr"]) for group in rules.get("groups") or [] for rule in group["rules"]]


def used_metric_families(dashboard: Mapping[str, Any], rules: Mapping[str, Any]) -> set[str]:
    """The metric families the dashboard and the rules read. Series the rules record
    themselves are left out: Prometheus makes them, no lg-deploy process exports them."""
    recorded = {
        rule["record"]
        for group in rules.get("groups") or []
        for rule in group["rules"]
        if "record" in rule
    }
    names: set[str] = set()
    for expression in dashboard_expressions(dashboard) + rule_expressions(rules):
        names |= metric_names(expression)
    return {family_name(name) for name in names - recorded}


def committed_metric_families() -> set[str]:
    """``used_metric_families`` of the committed dashboard and rules files."""
    import yaml

    dashboard = json.loads(DASHBOARD_PATH.read_text())
    rules = yaml.safe_load(RULES_PATH.read_text())
    return used_metric_families(dashboard, rules)


def exposed_metric_families(metrics_text: str) -> set[str]:
    """The families a /metrics page exposes samples of (Prometheus text format or
    OpenMetrics), named as ``family_name`` names them. A labelled metric that has no
    sample yet is not exposed, just as PromQL would find nothing of it."""
    names: set[str] = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            match = _SAMPLE_NAME.match(line)
            if match is not None:
                names.add(family_name(match.group()))
    return names
