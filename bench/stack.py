"""The real stack of one run: a fresh PostgreSQL database, a queue of its own on Redis, and
``lg-deploy api`` / ``lg-deploy worker`` processes started through tests/harness.py."""

from __future__ import annotations

import asyncio
import resource
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from bench.load import Settled
from lg_deploy.core.settings import Settings
from lg_deploy.core.store.migrate import migrate
from tests.conftest import EXAMPLES, PgAdmin, drop_queue
from tests.harness import Fleet, Server, Worker, cpu_seconds


class Timing(NamedTuple):
    """When an execution became runnable, was claimed and ended, by the database's clock."""

    status: str
    queued_at: datetime
    started_at: datetime
    finished_at: datetime


def product_default(name: str) -> Any:
    """A setting's default, as lg-deploy ships it."""
    return Settings.model_fields[name].default


def with_address(url: str, port: int) -> str:
    """``url`` (credentials, database and all) pointed at 127.0.0.1:``port``."""
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = f"{credentials}@127.0.0.1:{port}" if credentials else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def address(url: str) -> tuple[str, int]:
    """The host and port a database or Redis URL names."""
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or (6379 if parts.scheme == "redis" else 5432)


def _server_pids(command: str, marker: str = "") -> list[int]:
    """Processes named ``command`` whose command line mentions ``marker``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == command:
                if marker in (entry / "cmdline").read_text():
                    pids.append(int(entry.name))
        except OSError:
            continue  # it exited meanwhile
    return pids


class Stack:
    """A database and a queue of this run's own, the fleet on them, and the CPU each part
    used. Everything is removed by ``close``."""

    def __init__(self, folder: Path, admin_url: str, redis_url: str, **env: str) -> None:
        self.admin = PgAdmin(admin_url)
        self.database = f"lgd_bench_{uuid.uuid4().hex[:10]}"
        self.database_url = admin_url.rsplit("/", 1)[0] + "/" + self.database
        self.db = PgAdmin(self.database_url)
        self.redis_url = redis_url
        self.queue_name = f"lgd-bench-{uuid.uuid4().hex[:10]}"
        self.fleet = Fleet(
            folder,
            LG_DEPLOY_DATABASE_URL=self.database_url,
            LG_DEPLOY_QUEUE_URL=redis_url,
            LG_DEPLOY_QUEUE_NAME=self.queue_name,
            LG_DEPLOY_CONFIG=str(EXAMPLES),
            # The harness's test timings are short; measure the shipped ones.
            LG_DEPLOY_LEASE_S=str(product_default("lease_s")),
            LG_DEPLOY_RECONCILE_INTERVAL_S=str(product_default("reconcile_interval_s")),
            **env,
        )
        self.api: Server | None = None

    def open(self) -> None:
        self.admin.execute(f'CREATE DATABASE "{self.database}"')
        asyncio.run(migrate(self.database_url))

    def close(self) -> None:
        self.fleet.stop_all()
        self.admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
        drop_queue(self.redis_url, self.queue_name)

    # -- processes

    def start_api(self, **env: str) -> Server:
        self.api = self.fleet.api(**env)
        return self.api

    @property
    def workers(self) -> list[Worker]:
        return [w for w in self.fleet.workers if w.running()]

    def scale(self, count: int, **env: str) -> list[Worker]:
        """Exactly ``count`` workers running (the newest stopped first)."""
        while len(self.workers) > count:
            self.workers[-1].stop()
        self.fleet.start_workers(count - len(self.workers), **env)
        return self.workers

    def stop_all(self) -> None:
        self.fleet.stop_all()
        self.api = None

    @property
    def settled(self) -> Settled:
        return Settled(self.redis_url, self.queue_name)

    # -- what each part of the stack used

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: the API, the workers, this database's PostgreSQL backends,
        the Redis server (all of it: it is shared) and this process."""
        used: dict[str, float] = {}
        for process in self.fleet.processes:
            if process.running():
                part = "api" if isinstance(process, Server) else "workers"
                used[f"{part}:{process.pid}"] = process.cpu_seconds()
        for pid in _server_pids("postgres", f" {self.database} "):
            used[f"postgres:{pid}"] = _cpu_or_zero(pid)
        for pid in _server_pids("redis-server"):
            used[f"redis:{pid}"] = _cpu_or_zero(pid)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        used["bench"] = usage.ru_utime + usage.ru_stime
        return used

    # -- the database, read directly

    def timings(self, ids: Iterable[str]) -> list[Timing]:
        rows = self.db.execute(
            "SELECT status, queued_at, started_at, finished_at FROM executions"
            " WHERE execution_id = ANY(%s::uuid[])",
            (list(ids),),
        )
        return [Timing(*row) for row in rows]

    def lease_owner(self, execution_id: str, attempt: int = 1) -> str | None:
        """The worker (host:pid:suffix) running ``attempt`` of the execution, if one is."""
        rows = self.db.execute(
            "SELECT lease_owner FROM executions WHERE execution_id = %s AND attempt = %s"
            " AND status = 'RUNNING'",
            (execution_id, attempt),
        )
        return rows[0][0] if rows else None

    def forget_queued(self) -> None:
        """Drop executions nobody ran (a submission benchmark's) and their jobs."""
        self.db.execute("DELETE FROM executions WHERE status = 'QUEUED'")
        drop_queue(self.redis_url, self.queue_name)


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0  # it exited meanwhile


PARTS = ("api", "workers", "postgres", "redis", "bench")


def per_execution_ms(
    before: dict[str, float], after: dict[str, float], count: float
) -> dict[str, float]:
    """CPU ms per execution of each part between two ``Stack.cpu`` readings. PostgreSQL
    backends and Redis are summed over their processes; a backend that exited in between
    is missed (the pools keep theirs open)."""
    used = dict.fromkeys(PARTS, 0.0)
    for key, value in after.items():
        used[key.split(":")[0]] += value - before.get(key, 0.0)
    return {key: round(1000 * used[key] / count, 2) for key in PARTS}
