"""The FastAPI application: the control plane. It validates, writes the execution row,
enqueues its id and answers at once; it never runs a graph and keeps no state of its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from lg_deploy.api import errors
from lg_deploy.api.auth import ApiKeys
from lg_deploy.api.limits import BodyLimit
from lg_deploy.api.metrics import router as metrics_router
from lg_deploy.api.routes import router
from lg_deploy.api.runtime import open_runtime
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.settings import Settings

DESCRIPTION = """Durable LangGraph executions behind a REST API.

Every error answers with `{"error": {"code", "message", "details"}}`."""


def create_app(
    settings: Settings,
    registry: GraphRegistry,
    *,
    run_worker: bool = False,
    drain_s: float = 0.0,
) -> FastAPI:
    """The API; with ``run_worker`` it also runs a worker in-process (``lg-deploy dev``)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_runtime(
            settings, registry, run_worker=run_worker, drain_s=drain_s
        ) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(
        title="lg-deploy",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    app.include_router(router)
    app.include_router(metrics_router)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if keys := settings.api_key_set():
        app.add_middleware(ApiKeys, keys=keys)  # outermost: checked before the body is read
    return app


def app_from_environment() -> FastAPI:
    """The API of one ``lg-deploy api`` server process, configured from the environment."""
    from lg_deploy.api.cli import setup_logging
    from lg_deploy.core.graphs import find_config, load_registry

    settings = Settings()
    setup_logging(settings.log_level)
    return create_app(settings, load_registry(find_config(settings.config)))
