"""The ``lg-deploy`` command.

- ``dev``: API, queue and worker in one process, on SQLite by default.
- ``api``: the API server of a fleet (uvicorn, several processes allowed).
- ``worker``: a worker of a fleet (ARQ on Redis).
- ``migrate``: bring a database's schema up to date.
- ``prune``: one retention pass now (``--dry-run``: count what it would delete).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from lg_deploy.core.errors import LgDeployError
from lg_deploy.core.settings import Settings
from lg_deploy.core.urls import mask_url
from lg_deploy.run import loops
from lg_deploy.run.logs import setup_logging

if TYPE_CHECKING:
    from lg_deploy.core.graphs import GraphRegistry

log = logging.getLogger("lg_deploy")


def load_graphs(settings: Settings) -> GraphRegistry:
    """The registry of the configured langgraph.json, logged."""
    from lg_deploy.core.graphs import find_config, load_registry

    registry = load_registry(find_config(settings.config))
    log.info("graphs: %s (from %s)", ", ".join(registry.graphs), registry.path)
    return registry


def cmd_dev(settings: Settings) -> int:
    from lg_deploy.core.store.migrate import migrate
    from lg_deploy.run.api_process import dev_app

    if not settings.queue_url.startswith("memory://"):
        log.warning("dev mode runs its own worker on the in-process queue; using memory://")
        settings = settings.model_copy(update={"queue_url": "memory://"})
    url = settings.resolved_database_url()
    registry = load_graphs(settings)
    log.info("database: %s", mask_url(url))
    asyncio.run(migrate(url))
    app = dev_app(settings, registry)
    log.info("API on http://%s:%d (docs at /docs)", settings.host, settings.port)
    serve(app, settings, timeout_graceful_shutdown=5)
    return 0


def serve(app: Any, settings: Settings, **options: Any) -> None:
    """Serve ``app`` with uvicorn, logging through lg-deploy's own set-up."""
    import uvicorn

    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=False,  # api/requests.py logs each request, with its request id
        loop=loops.chosen(settings.event_loop),
        **options,
    )


class ConfigurationError(LgDeployError):
    """The deployment cannot start as configured."""


def _describe_backends(settings: Settings) -> None:
    log.info("database: %s", mask_url(settings.resolved_database_url()))
    log.info("queue: %s (%s)", mask_url(settings.queue_url), settings.queue_name)


async def _preflight(settings: Settings) -> None:
    """Refuse to start on a wrong URL, an unreachable backend (after the start-up retry)
    or a database that was not migrated."""
    from lg_deploy.core.store.migrate import schema_state
    from lg_deploy.run.wiring import open_backends

    async with open_backends(settings):
        pass
    state = await schema_state(settings.resolved_database_url())
    if state == "behind":
        raise ConfigurationError(
            "the database schema is not up to date: run `lg-deploy migrate` first"
        )
    if state == "ahead":
        log.warning("the database schema is newer than this release (a rolling upgrade?)")


def cmd_api(settings: Settings) -> int:
    import os
    import shutil
    import tempfile

    from lg_deploy.run.api_process import MULTIPROCESS_DIR

    require_shared_queue(settings, "api")
    registry = load_graphs(settings)
    _describe_backends(settings)
    asyncio.run(_preflight(settings))
    # Each server process builds its app from the environment: pass the flags on.
    os.environ["LG_DEPLOY_CONFIG"] = str(registry.path)
    os.environ["LG_DEPLOY_DATABASE_URL"] = settings.resolved_database_url()
    metrics_dir = None
    if settings.api_workers > 1:
        # The processes write their counters there; each /metrics sums them all.
        metrics_dir = tempfile.mkdtemp(prefix="lg-deploy-metrics-")
        os.environ[MULTIPROCESS_DIR] = metrics_dir
    log.info(
        "API on http://%s:%d with %d process(es)",
        settings.host,
        settings.port,
        settings.api_workers,
    )
    try:
        serve(
            "lg_deploy.run.api_process:app_from_environment",
            settings,
            factory=True,
            workers=settings.api_workers,
            timeout_graceful_shutdown=10,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def require_shared_queue(settings: Settings, command: str) -> None:
    """api and worker processes meet only through a shared queue."""
    if settings.queue_url.startswith("memory://"):
        raise ConfigurationError(
            f"lg-deploy {command} needs a shared queue: set LG_DEPLOY_QUEUE_URL=redis://... "
            "(for one process, use lg-deploy dev)"
        )


def cmd_worker(settings: Settings) -> int:
    from lg_deploy.run.worker_process import run_worker

    require_shared_queue(settings, "worker")
    if settings.worker_processes > 1:
        from lg_deploy.run.supervisor import Supervisor

        return Supervisor(settings, settings.worker_processes).run()
    registry = load_graphs(settings)
    _describe_backends(settings)
    log.info("event loop: %s", loops.chosen(settings.event_loop))
    asyncio.run(_preflight(settings))
    loops.run(run_worker(settings, registry), settings.event_loop)
    return 0


def cmd_migrate(settings: Settings) -> int:
    from lg_deploy.core.store.migrate import migrate

    url = settings.resolved_database_url()
    log.info("migrating %s", mask_url(url))
    asyncio.run(migrate(url))
    log.info("database schema is up to date")
    return 0


PRUNE_TIMEOUT_S = 600.0


def cmd_prune(settings: Settings, *, dry_run: bool = False) -> int:
    """One prune pass by hand (the workers run one every ``prune_interval_s``), with the
    counts it deleted, or with ``dry_run`` would delete, on standard output."""
    from lg_deploy.core.store import open_store

    async def prune() -> int:
        # A dry run counts the whole backlog in one statement, and a pass after a long
        # pause deletes more than usual: allow more than a request's ten seconds.
        store = open_store(
            settings.resolved_database_url(), pool_size=1, statement_timeout_s=PRUNE_TIMEOUT_S
        )
        try:
            report = await store.prune(
                batch_size=settings.prune_batch_size,
                keep_checkpoints=settings.checkpoints_keep,
                dry_run=dry_run,
            )
        finally:
            await store.close()
        if not report.ran:
            print("another prune pass is running (a worker's): nothing done", file=sys.stderr)
            return 1
        verb = "would delete" if dry_run else "deleted"
        print(
            f"{verb}: {report.executions} executions, {report.threads} threads' checkpoints, "
            f"{report.checkpoints} checkpoints"
        )
        if report.skipped_threads:
            print(f"skipped {report.skipped_threads} threads busy with a submission meanwhile")
        return 0

    _describe_backends(settings)
    return asyncio.run(prune())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lg-deploy", description="Run LangGraph graphs as durable executions."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="API, queue and worker in one process, on SQLite")
    dev.add_argument("--config", help="path to langgraph.json (default ./langgraph.json)")
    dev.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    dev.add_argument("--port", type=int, help="port to listen on (default 8000)")
    dev.add_argument("--database-url", help="override LG_DEPLOY_DATABASE_URL")
    api = sub.add_parser("api", help="the API server of a fleet")
    api.add_argument("--config", help="path to langgraph.json (default ./langgraph.json)")
    api.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    api.add_argument("--port", type=int, help="port to listen on (default 8000)")
    api.add_argument("--workers", type=int, dest="api_workers", help="server processes")
    worker = sub.add_parser("worker", help="a worker of a fleet (needs a redis:// queue)")
    worker.add_argument("--config", help="path to langgraph.json (default ./langgraph.json)")
    worker.add_argument(
        "--concurrency", type=int, dest="worker_concurrency", help="executions at once"
    )
    worker.add_argument(
        "--processes",
        type=int,
        dest="worker_processes",
        help="worker processes under this command (one core each; default 1)",
    )
    sub.add_parser("migrate", help="create or upgrade the database schema")
    prune = sub.add_parser(
        "prune", help="delete the executions and checkpoints whose retention has passed"
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="count what would be deleted, delete nothing"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides = {
        key: value
        for key in (
            "config",
            "host",
            "port",
            "database_url",
            "api_workers",
            "worker_concurrency",
            "worker_processes",
        )
        if (value := getattr(args, key, None)) is not None
    }
    try:
        settings = Settings(**overrides)
    except ValueError as exc:
        print(f"lg-deploy: invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, settings.log_format)
    commands = {"dev": cmd_dev, "api": cmd_api, "worker": cmd_worker, "migrate": cmd_migrate}
    try:
        if args.command == "prune":
            return cmd_prune(settings, dry_run=args.dry_run)
        return commands[args.command](settings)
    except LgDeployError as exc:
        print(f"lg-deploy {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
