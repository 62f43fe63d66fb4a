"""Imports run one way: run/ -> api/ and worker/ -> core/ (docs/architecture.md)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict

from tests.conftest import ROOT

PACKAGES = ("api", "core", "run", "worker")
# Which of lg-deploy's packages each one may import (itself included).
MAY_IMPORT = {
    "core": {"core"},
    "api": {"api", "core"},
    "worker": {"worker", "core"},
    "run": {"run", "api", "worker", "core"},
}


def import_graph() -> dict[str, set[str]]:
    """Package -> the lg-deploy packages its modules import, lazy imports included."""
    graph: dict[str, set[str]] = defaultdict(set)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "lg_deploy" and len(parts) > 1:
                        graph[package].add(parts[1])
    return graph


def test_imports_between_the_planes_run_one_way() -> None:
    """No package imports one it sits above or beside: core imports no plane, api and
    worker never import each other, and only run/ imports both."""
    graph = import_graph()
    wrong = {
        package: sorted(imported - MAY_IMPORT[package])
        for package, imported in graph.items()
        if imported - MAY_IMPORT[package]
    }
    assert wrong == {}
    assert graph["run"] >= {"api", "worker", "core"}


def test_every_module_belongs_to_a_known_package() -> None:
    """The installed namespace has exactly the four packages the graph above checks."""
    found = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert found - {"tests", "bench", "observability"} == set(PACKAGES)


def test_an_api_process_of_a_fleet_never_loads_the_worker_plane() -> None:
    """`lg-deploy api` loads no worker module, so its /metrics carries no worker metrics
    (a dashboard would count every API pod as a live worker)."""
    probe = (
        "import sys, lg_deploy.run.api_process, lg_deploy.run.cli; "
        "print(sorted(m for m in sys.modules if m.startswith('lg_deploy.worker')))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"
