"""How long finished executions are kept (docs/operations.md, "Retention").

An execution's retention is settled when it is submitted, from the first that says one:
the request, its graph (``"retention"`` in langgraph.json, or
``LG_DEPLOY_GRAPH_RETENTION``), the deployment (``LG_DEPLOY_RETENTION_S``). It is stored
with the row, and the move that finishes the execution stamps ``delete_after`` from it
(``core/store/statements.py``): COMPLETED, FAILED and CANCELLED executions with
``retention_s``, an INTERRUPTED one (waiting for a person) with
``interrupted_retention_s``. None keeps the row for ever. The pruner
(``core/store/pruning.py``) deletes rows whose ``delete_after`` has passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Retention:
    """Seconds a finished (COMPLETED, FAILED, CANCELLED) and an INTERRUPTED execution are
    kept after they reached that status; None: for ever."""

    finished_s: float | None
    interrupted_s: float | None = None


@dataclass(frozen=True)
class RetentionPolicy:
    """The deployment's retention and each graph's own (over it, field by field)."""

    default: Retention
    graphs: Mapping[str, Mapping[str, float | None]] = field(default_factory=dict)

    def for_graph(self, graph_id: str) -> Retention:
        own = self.graphs.get(graph_id, {})
        return Retention(
            finished_s=own.get("finished_s", self.default.finished_s),
            interrupted_s=own.get("interrupted_s", self.default.interrupted_s),
        )

    def resolve(
        self,
        graph_id: str,
        *,
        finished_s: float | None = None,
        interrupted_s: float | None = None,
    ) -> Retention:
        """The retention of a new execution of ``graph_id``; what its request gave wins."""
        graph = self.for_graph(graph_id)
        return Retention(
            finished_s=graph.finished_s if finished_s is None else finished_s,
            interrupted_s=graph.interrupted_s if interrupted_s is None else interrupted_s,
        )


def parse_seconds(value: object, what: str) -> float | None:
    """A retention in seconds: a number >= 0, or None (kept for ever); ``ValueError``
    naming ``what`` otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number of seconds or null, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


def parse_graph_retention(text: str) -> dict[str, dict[str, float | None]]:
    """``LG_DEPLOY_GRAPH_RETENTION``: ``graph=seconds[/interrupted seconds],...``, each
    seconds a number or ``none`` (for ever); e.g. ``agent=86400,approval=604800/none``."""
    graphs: dict[str, dict[str, float | None]] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        graph_id, sep, spec = item.partition("=")
        if not sep or not graph_id.strip():
            raise ValueError(f"{item!r}: expected graph=seconds[/interrupted seconds]")
        own: dict[str, float | None] = {}
        for key, raw in zip(("finished_s", "interrupted_s"), spec.split("/"), strict=False):
            raw = raw.strip()
            if raw.lower() == "none":
                own[key] = None
                continue
            try:
                number = float(raw)
            except ValueError:
                raise ValueError(f"{item!r}: {raw!r} is not a number of seconds") from None
            own[key] = parse_seconds(number, f"{graph_id.strip()}'s retention")
        if spec.count("/") > 1:
            raise ValueError(f"{item!r}: at most two numbers, finished/interrupted")
        graphs[graph_id.strip()] = own
    return graphs
