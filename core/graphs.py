"""Graphs declared in a LangGraph-style ``langgraph.json``.

``{"graphs": {"name": "./path.py:attr"}, "env": {...} | "./.env"}``; an entry may also be
``{"path": "./path.py:attr", "description": "..."}``; a top-level ``durability`` object may
give a graph its own LangGraph durability, and a ``retention`` object its own retention
(``{"<graph>": {"finished_s": 86400, "interrupted_s": null}}``, ``core/retention.py``).
``attr`` is a compiled graph, a ``StateGraph`` builder, or a factory taking a
``RunnableConfig`` (sync or async) that returns either. Every entry is imported at load
time, so a broken one fails at start-up with the file, the graph and the reason.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.pregel import Pregel

from lg_deploy.core.errors import GraphConfigError, NotFound
from lg_deploy.core.retention import parse_seconds

log = logging.getLogger(__name__)

CONFIG_FILE = "langgraph.json"
DURABILITY_SECTION = "durability"
DURABILITY_MODES = ("sync", "async", "exit")
RETENTION_SECTION = "retention"
RETENTION_KEYS = ("finished_s", "interrupted_s")
# Bound graphs a registry keeps (a process has a checkpointer or two, a test more).
_MOST_BOUND = 64


@dataclass
class GraphSpec:
    graph_id: str
    source: str
    target: Any
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    # LangGraph's durability for this graph's executions; None: the deployment's default.
    durability: str | None = None
    # This graph's own retention, key by key ("finished_s", "interrupted_s"; a value of
    # None keeps for ever); a key left out: the deployment's.
    retention: dict[str, float | None] = field(default_factory=dict)

    @property
    def is_factory(self) -> bool:
        return not isinstance(self.target, Pregel | StateGraph)


@dataclass
class GraphRegistry:
    """The graphs of one ``langgraph.json``, ready to be bound to a checkpointer."""

    path: Path
    graphs: dict[str, GraphSpec] = field(default_factory=dict)
    # A compiled graph or a builder bound to a checkpointer, made once: LangGraph keeps a
    # run's state out of the graph, so every execution can share it. Keyed by the graph
    # and the checkpointer (held here, so that its id is not reused).
    _bound: dict[tuple[str, int], tuple[BaseCheckpointSaver | None, Pregel]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __contains__(self, graph_id: object) -> bool:
        return graph_id in self.graphs

    def get(self, graph_id: str) -> GraphSpec:
        try:
            return self.graphs[graph_id]
        except KeyError:
            raise NotFound("graph", graph_id) from None

    async def build(
        self, graph_id: str, config: Mapping[str, Any], checkpointer: BaseCheckpointSaver | None
    ) -> Pregel:
        """The graph for one execution, with ``checkpointer`` attached. A factory is
        called each time (it may build from ``config``); a graph or a builder is bound to
        a checkpointer once."""
        spec = self.get(graph_id)
        if spec.is_factory:
            return await _materialize(spec.target, config, checkpointer, spec)
        key = (graph_id, id(checkpointer))
        if (bound := self._bound.get(key)) is None:
            if len(self._bound) >= _MOST_BOUND:
                del self._bound[next(iter(self._bound))]
            graph = await _materialize(spec.target, config, checkpointer, spec)
            bound = self._bound[key] = (checkpointer, graph)
        return bound[1]


def find_config(explicit: str | None) -> Path:
    """``explicit`` (``--config`` / ``LG_DEPLOY_CONFIG``) or ./langgraph.json."""
    path = Path(explicit) if explicit else Path.cwd() / CONFIG_FILE
    if not path.is_file():
        hint = "" if explicit else " (pass --config or set LG_DEPLOY_CONFIG)"
        raise GraphConfigError(str(path), None, f"no such file{hint}")
    return path.resolve()


def load_registry(path: Path) -> GraphRegistry:
    """Read ``path``, apply its ``env``, import every graph; raise ``GraphConfigError``."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GraphConfigError(str(path), None, f"cannot read it: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("graphs"), dict):
        raise GraphConfigError(str(path), None, 'expected an object with a "graphs" object')
    if not document["graphs"]:
        raise GraphConfigError(str(path), None, "declares no graphs")
    _apply_env(path, document.get("env"))
    registry = GraphRegistry(path=path)
    for graph_id, entry in document["graphs"].items():
        registry.graphs[graph_id] = _load_entry(path, graph_id, entry)
    _apply_durability(path, registry, document.get(DURABILITY_SECTION))
    _apply_retention(path, registry, document.get(RETENTION_SECTION))
    return registry


def _apply_retention(path: Path, registry: GraphRegistry, section: Any) -> None:
    """``"retention": {"<graph id>": {"finished_s": seconds | null, "interrupted_s": ...}}``:
    how long a graph's executions are kept once finished or interrupted
    (docs/operations.md, "Retention")."""
    if section is None:
        return
    if not isinstance(section, dict):
        raise GraphConfigError(str(path), None, f'"{RETENTION_SECTION}" must be an object')
    for graph_id, own in section.items():
        if graph_id not in registry.graphs:
            raise GraphConfigError(str(path), graph_id, "has a retention but is not a graph")
        if not isinstance(own, dict) or not set(own) <= set(RETENTION_KEYS):
            raise GraphConfigError(
                str(path),
                graph_id,
                f"retention must be an object with {' and/or '.join(RETENTION_KEYS)}",
            )
        try:
            registry.graphs[graph_id].retention = {
                key: parse_seconds(value, f"retention.{key}") for key, value in own.items()
            }
        except ValueError as exc:
            raise GraphConfigError(str(path), graph_id, str(exc)) from None


def _apply_durability(path: Path, registry: GraphRegistry, section: Any) -> None:
    """``"durability": {"<graph id>": "sync" | "async" | "exit"}``: a graph's own LangGraph
    durability (docs/architecture.md, "Durability"), over the deployment's default."""
    if section is None:
        return
    if not isinstance(section, dict):
        raise GraphConfigError(str(path), None, f'"{DURABILITY_SECTION}" must be an object')
    for graph_id, mode in section.items():
        if graph_id not in registry.graphs:
            raise GraphConfigError(str(path), graph_id, "has a durability but is not a graph")
        if mode not in DURABILITY_MODES:
            raise GraphConfigError(
                str(path),
                graph_id,
                f"durability {mode!r}: use one of {', '.join(DURABILITY_MODES)}",
            )
        registry.graphs[graph_id].durability = mode


def _apply_env(path: Path, env: Any) -> None:
    """Values from ``env`` fill in variables the process does not already set."""
    if env is None:
        return
    if isinstance(env, str):
        from dotenv import dotenv_values

        env_path = (path.parent / env).resolve()
        if not env_path.is_file():
            raise GraphConfigError(str(path), None, f"env file {env_path} does not exist")
        values: Mapping[str, Any] = dotenv_values(env_path)
    elif isinstance(env, dict):
        values = env
    else:
        raise GraphConfigError(str(path), None, '"env" must be an object or a path to a .env')
    for key, value in values.items():
        if value is not None:
            os.environ.setdefault(key, str(value))


def _load_entry(path: Path, graph_id: str, entry: Any) -> GraphSpec:
    description = None
    if isinstance(entry, dict):
        description = entry.get("description")
        entry = entry.get("path")
    if not isinstance(entry, str) or ":" not in entry:
        raise GraphConfigError(str(path), graph_id, 'expected "./file.py:attribute"')
    module_ref, _, attr = entry.rpartition(":")
    module = _import(path, graph_id, module_ref)
    try:
        target = getattr(module, attr)
    except AttributeError:
        raise GraphConfigError(
            str(path), graph_id, f"{module_ref} has no attribute {attr!r}"
        ) from None
    if not isinstance(target, Pregel | StateGraph) and not callable(target):
        raise GraphConfigError(
            str(path),
            graph_id,
            f"{attr} is a {type(target).__name__}, not a graph, a builder or a factory",
        )
    spec = GraphSpec(graph_id=graph_id, source=entry, target=target, description=description)
    spec.description = spec.description or _describe(target)
    spec.input_schema, spec.output_schema = _schemas(spec)
    return spec


def _import(path: Path, graph_id: str, module_ref: str) -> Any:
    base = path.parent
    if module_ref.endswith(".py") or "/" in module_ref:
        file = (base / module_ref).resolve()
        if not file.is_file():
            raise GraphConfigError(str(path), graph_id, f"file {file} does not exist")
        # The config's folder is importable, so graph files can import their neighbours.
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))
        name = f"lg_deploy_graphs.{graph_id}"
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise GraphConfigError(str(path), graph_id, f"cannot import {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise GraphConfigError(
                str(path), graph_id, f"importing {file} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return module
    try:
        return importlib.import_module(module_ref)
    except Exception as exc:
        raise GraphConfigError(
            str(path), graph_id, f"importing {module_ref} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _describe(target: Any) -> str | None:
    doc = inspect.getdoc(target) if inspect.isfunction(target) else None
    return doc.strip().splitlines()[0] if doc else None


async def _materialize(
    target: Any,
    config: Mapping[str, Any],
    checkpointer: BaseCheckpointSaver | None,
    spec: GraphSpec,
) -> Pregel:
    if isinstance(target, Pregel):
        return target.copy(update={"checkpointer": checkpointer})
    if isinstance(target, StateGraph):
        return target.compile(checkpointer=checkpointer)
    made = target(dict(config)) if _takes_argument(target) else target()
    if inspect.isawaitable(made):
        made = await made
    if isinstance(made, Pregel | StateGraph):
        return await _materialize(made, config, checkpointer, spec)
    raise TypeError(
        f"the factory for graph {spec.graph_id!r} returned a {type(made).__name__}, not a graph"
    )


def _takes_argument(factory: Any) -> bool:
    try:
        return bool(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return True


def _schemas(spec: GraphSpec) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The input and output JSON schemas, built once; a factory is called with an empty
    config for it. A graph whose schema cannot be expressed gets None, not a failure."""
    import asyncio

    target = spec.target
    try:
        if spec.is_factory:
            made = target({}) if _takes_argument(target) else target()
            if inspect.isawaitable(made):
                if hasattr(made, "close"):
                    made.close()  # an async factory: its schema is left unknown
                return None, None
            target = made
        if isinstance(target, StateGraph):
            target = target.compile()
        if not isinstance(target, Pregel):
            return None, None
        return target.get_input_jsonschema(), target.get_output_jsonschema()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.warning("graph %r: no JSON schema (%s: %s)", spec.graph_id, type(exc).__name__, exc)
        return None, None
