"""Chaos under load (slow): the queue flushed, Redis restarted, PostgreSQL restarted,
and a soak with random worker kills. Every accepted execution still completes, once."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import TEST_GRAPHS, PgAdmin, fresh_database, unique_queue_name
from tests.processes import Fleet, free_port

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


class RedisServer:
    """A throwaway redis-server on a port of its own, that a test may stop and restart."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (Debian: apt-get install redis-server)")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def restart_postgres() -> None:
    """Restart the test PostgreSQL cluster, as CI runs it (pg_ctlcluster)."""
    versions = os.listdir("/etc/postgresql") if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        pytest.fail("restarting PostgreSQL needs pg_ctlcluster (Debian's postgresql package)")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", "restart"],
        check=True,
        timeout=60,
    )


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def database(pg_admin: PgAdmin, pg_template: str) -> Iterator[str]:
    with fresh_database(pg_admin, pg_template) as url:
        yield url


def make_fleet(folder: Path, database_url: str, redis_url: str, **env: str) -> Fleet:
    return Fleet(
        folder,
        LG_DEPLOY_DATABASE_URL=database_url,
        LG_DEPLOY_QUEUE_URL=redis_url,
        LG_DEPLOY_QUEUE_NAME=unique_queue_name(),
        LG_DEPLOY_CONFIG=str(TEST_GRAPHS),
        **env,
    )


def submit(api: Any, n: int, input: dict[str, Any]) -> list[str]:
    """Submit n executions, retrying an answer of 503 (a backend restarting) as a client
    should; every accepted execution is returned."""
    ids = []
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for _ in range(n):
            deadline = time.monotonic() + 60
            while True:
                try:
                    response = client.post("/execute", json={"graph_id": "slow", "input": input})
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code == 202:
                    ids.append(response.json()["execution_id"])
                    break
                assert response is None or response.status_code == 503, response.text
                assert time.monotonic() < deadline, "the API never accepted again"
                time.sleep(0.2)
    return ids


def final_statuses(api: Any, ids: list[str], timeout: float = 180) -> Counter[str]:
    """Poll until every execution is terminal (tolerating 503s while a backend restarts)."""
    pending = set(ids)
    statuses: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=api.url, timeout=10) as client:
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} executions never finished"
            for execution_id in list(pending):
                try:
                    response = client.get(f"/executions/{execution_id}")
                except httpx.TransportError:
                    break
                if response.status_code != 200:
                    break
                status = response.json()["status"]
                if status in ("COMPLETED", "FAILED", "CANCELLED"):
                    statuses[execution_id] = status
                    pending.discard(execution_id)
            time.sleep(0.2)
    return Counter(statuses.values())


def completed_lines(fleet: Fleet) -> Counter[str]:
    """How many times each execution was recorded as completed, from the worker logs."""
    import re

    return Counter(re.findall(r"execution (\S+) attempt \d+ COMPLETED", fleet.worker_logs()))


WORK = {"steps": 2, "sleep_s": 0.05}


def test_flushall_during_a_load_loses_nothing(
    tmp_path: Path, database: str, own_redis: RedisServer
) -> None:
    """FLUSHALL on Redis in the middle of a load: every execution still completes."""
    fleet = make_fleet(tmp_path, database, own_redis.url)
    try:
        api = fleet.api()
        fleet.worker()
        fleet.worker()
        ids = submit(api, 150, WORK)
        time.sleep(0.5)
        redis.Redis.from_url(own_redis.url).flushall()
        assert final_statuses(api, ids) == Counter({"COMPLETED": 150})
    finally:
        fleet.stop_all()


def test_redis_restart_during_a_load_loses_nothing(
    tmp_path: Path, database: str, own_redis: RedisServer
) -> None:
    """Redis goes down mid-load (submissions meanwhile are accepted and deferred) and
    comes back empty: every execution completes, and the workers keep running."""
    fleet = make_fleet(tmp_path, database, own_redis.url)
    try:
        api = fleet.api()
        workers = [fleet.worker(), fleet.worker()]
        ids = submit(api, 80, WORK)
        own_redis.stop()
        ids += submit(api, 20, WORK)  # accepted while Redis is down
        time.sleep(2)
        own_redis.start()
        assert final_statuses(api, ids) == Counter({"COMPLETED": 100})
        assert all(w.proc is not None and w.proc.poll() is None for w in workers)
        # Graphs running when Redis dropped went on: none was stopped and handed back.
        assert "handed back" not in fleet.worker_logs()
    finally:
        fleet.stop_all()


def test_postgres_restart_during_a_load_loses_nothing(
    tmp_path: Path, database: str, redis_url: str
) -> None:
    """PostgreSQL restarts mid-load: the API answers 503 meanwhile, the workers pause and
    come back by themselves, and every execution completes."""
    fleet = make_fleet(tmp_path, database, redis_url)
    try:
        api = fleet.api()
        workers = [fleet.worker(), fleet.worker()]
        ids = submit(api, 100, {"steps": 3, "sleep_s": 0.1})
        time.sleep(1)
        restart_postgres()
        ids += submit(api, 20, WORK)
        assert final_statuses(api, ids) == Counter({"COMPLETED": 120})
        assert all(w.proc is not None and w.proc.poll() is None for w in workers)
    finally:
        fleet.stop_all()


def test_soak_with_random_worker_kills(tmp_path: Path, database: str, redis_url: str) -> None:
    """Two thousand executions while workers are SIGKILLed at random and replaced: every
    execution ends COMPLETED, the per-status counts add up, none completed twice."""
    rng = random.Random(7)
    fleet = make_fleet(tmp_path, database, redis_url, LG_DEPLOY_WORKER_CONCURRENCY="8")
    try:
        api = fleet.api()
        workers = [fleet.worker() for _ in range(3)]
        ids = submit(api, 2000, {"steps": 1, "sleep_s": 0.01})
        kills = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and kills < 6:
            time.sleep(rng.uniform(1.0, 3.0))
            victim = workers.pop(rng.randrange(len(workers)))
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            workers.append(fleet.worker())
        counts = final_statuses(api, ids, timeout=300)
        assert counts == Counter({"COMPLETED": 2000})
        assert sum(counts.values()) == len(set(ids)) == 2000
        recorded = completed_lines(fleet)
        assert set(recorded) <= set(ids)
        assert max(recorded.values()) == 1
    finally:
        fleet.stop_all()
