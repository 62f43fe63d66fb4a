"""The FastAPI application: the control plane. It validates, writes the execution row,
enqueues its id and answers at once; it never runs a graph and keeps no state of its own."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from importlib.metadata import version

from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry

from lg_deploy.api import errors, metrics, platform
from lg_deploy.api.auth import ApiKeys
from lg_deploy.api.deps import BackendsFactory
from lg_deploy.api.health import router as health_router
from lg_deploy.api.limits import BodyLimit
from lg_deploy.api.requests import RequestContext
from lg_deploy.api.routes import router
from lg_deploy.api.waiting import Waiters
from lg_deploy.core.graphs import GraphRegistry
from lg_deploy.core.settings import Settings

DESCRIPTION = """Durable LangGraph executions behind a REST API.

Every error answers with `{"error": {"code", "message", "details"}}`, except on the routes
of the LangGraph Platform API (assistants, threads, runs, /ok, /info), which answer
`{"detail": ...}` as langgraph-sdk expects."""


def create_app(
    settings: Settings,
    registry: GraphRegistry,
    backends: BackendsFactory,
    *,
    metrics_registry: CollectorRegistry = REGISTRY,
) -> FastAPI:
    """The API over the backends that ``backends`` opens when the app starts; /metrics
    shows ``metrics_registry`` besides the deployment's gauges."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with backends() as opened:
            waiters = Waiters(opened.store, opened.queue)
            await waiters.start()
            await platform.start(opened, registry)
            app.state.backends = opened
            app.state.waiters = waiters
            try:
                yield
            finally:
                await waiters.stop()

    app = FastAPI(
        title="lg-deploy",
        version=version("lg-deploy"),
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics_registry = metrics_registry
    metrics.prepare(registry.graphs)
    errors.install(app)
    app.include_router(router)
    app.include_router(health_router)
    app.include_router(metrics.router)
    app.include_router(platform.router)  # the LangGraph Platform API (docs/compat.md)
    app.add_middleware(
        BodyLimit, max_bytes=settings.max_body_bytes, read_timeout_s=settings.body_timeout_s
    )
    if keys := settings.api_key_set():
        app.add_middleware(ApiKeys, keys=keys)  # checked before the body is read
    app.add_middleware(RequestContext)  # outermost: every answer, 401s included
    return app
