"""The ASGI applications the ``lg-deploy`` command serves with uvicorn."""

from __future__ import annotations

from fastapi import FastAPI

from lg_deploy.api.app import create_app
from lg_deploy.core.graphs import GraphRegistry, find_config, load_registry
from lg_deploy.core.settings import Settings
from lg_deploy.run.logs import setup_logging
from lg_deploy.run.wiring import backends_with_worker, open_backends


def api_app(settings: Settings, registry: GraphRegistry) -> FastAPI:
    """The API of a fleet: it only writes, enqueues and reads."""
    return create_app(settings, registry, lambda: open_backends(settings))


def dev_app(settings: Settings, registry: GraphRegistry) -> FastAPI:
    """``lg-deploy dev``: the API with a worker in the same process, on the in-process
    queue. The only place where an API process runs graphs."""
    return create_app(settings, registry, backends_with_worker(settings, registry))


def app_from_environment() -> FastAPI:
    """The API of one ``lg-deploy api`` server process, configured from the environment
    (uvicorn starts each server process with this factory)."""
    settings = Settings()
    setup_logging(settings.log_level)
    return api_app(settings, load_registry(find_config(settings.config)))
