"""The ASGI applications the ``lg-deploy`` command serves with uvicorn."""

from __future__ import annotations

import os

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from lg_deploy.api.app import create_app
from lg_deploy.core.graphs import GraphRegistry, find_config, load_registry
from lg_deploy.core.settings import Settings
from lg_deploy.run.logs import setup_logging
from lg_deploy.run.wiring import open_backends

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def api_app(settings: Settings, registry: GraphRegistry) -> FastAPI:
    """The API of a fleet: it only writes, enqueues and reads. When ``lg-deploy api`` runs
    several server processes it points PROMETHEUS_MULTIPROC_DIR at a directory of their
    own, and /metrics from any of them sums the counters of all (prometheus-client's
    multiprocess mode)."""
    metrics_registry = REGISTRY
    if os.environ.get(MULTIPROCESS_DIR):
        metrics_registry = CollectorRegistry()
        MultiProcessCollector(metrics_registry)
    return create_app(
        settings,
        registry,
        lambda: open_backends(settings, events=True, checkpointer=True),
        metrics_registry=metrics_registry,
    )


def dev_app(settings: Settings, registry: GraphRegistry) -> FastAPI:
    """``lg-deploy dev``: the API with a worker in the same process, on the in-process
    queue. The only place where an API process runs graphs (and imports the worker)."""
    from lg_deploy.run.worker_process import backends_with_worker

    return create_app(settings, registry, backends_with_worker(settings, registry))


def app_from_environment() -> FastAPI:
    """The API of one ``lg-deploy api`` server process, configured from the environment
    (uvicorn starts each server process with this factory)."""
    settings = Settings()
    setup_logging(settings.log_level, settings.log_format)
    return api_app(settings, load_registry(find_config(settings.config)))
