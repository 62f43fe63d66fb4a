"""Chaos under load (slow): the queue flushed, Redis restarted, PostgreSQL restarted,
and a soak with random worker kills. Every accepted execution still completes, once."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import redis

from tests.conftest import PG_ADMIN_URL, TEST_GRAPHS, PgAdmin, fresh_database, unique_queue_name
from tests.harness import Fleet, RedisServer, lines, poll

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]


def local_cluster() -> tuple[str, str]:
    """The (version, name) of the local PostgreSQL cluster the tests use, found by its
    port; the test is skipped, saying why, when the suite points at another server."""
    url = urlsplit(PG_ADMIN_URL)
    if url.hostname not in ("127.0.0.1", "localhost", "::1"):
        pytest.skip(f"restarting PostgreSQL needs a local server; the tests use {url.hostname}")
    if shutil.which("pg_lsclusters") is None:
        pytest.fail("restarting PostgreSQL needs pg_ctlcluster (Debian's postgresql-common)")
    port = str(url.port or 5432)
    listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True)
    for line in listed.stdout.splitlines():
        version, name, cluster_port = line.split()[:3]
        if cluster_port == port:
            return version, name
    pytest.skip(f"no local PostgreSQL cluster listens on port {port}")


def postgres(action: str) -> None:
    """Stop, start or restart the tests' local PostgreSQL cluster, as CI runs it."""
    version, name = local_cluster()
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action],
        check=True,
        timeout=60,
    )


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
    """Submit n executions of the slow graph with ``input``."""
    return submit_each(api, [input] * n)


def submit_each(api: Any, inputs: list[dict[str, Any]]) -> list[str]:
    """Submit one execution of the slow graph per input, retrying an answer of 503 (a
    backend restarting) as a client should; every accepted execution is returned."""
    ids = []
    with httpx.Client(base_url=api.url, timeout=10) as client:
        for input in inputs:
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


def every_execution(api: Any) -> list[dict[str, Any]]:
    """Every execution's record, a page of a thousand at a time."""
    found: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=api.url, timeout=30) as client:
        while True:
            params: dict[str, Any] = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            page = client.get("/executions", params=params).json()
            found += page["items"]
            if (cursor := page["next_cursor"]) is None:
                return found


def final_statuses(api: Any, ids: list[str], timeout: float = 180) -> Counter[str]:
    """Poll until every execution is terminal (tolerating 503s while a backend restarts)."""
    wanted = set(ids)

    def settled() -> Counter[str] | None:
        try:
            records = every_execution(api)
        except (httpx.HTTPError, KeyError):
            return None  # a backend restarting: ask again
        statuses = {r["execution_id"]: r["status"] for r in records if r["execution_id"] in wanted}
        if len(statuses) < len(wanted) or not set(statuses.values()) <= TERMINAL:
            return None
        return Counter(statuses.values())

    counts: Counter[str] = poll(settled, timeout, "every execution terminal")
    return counts


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
WORK = {"steps": 2, "sleep_s": 0.05}


def mid_load(fleet: Fleet, done: int = 10) -> None:
    """Until the workers have finished ``done`` executions: the load is under way."""
    finished = "lg_deploy_executions_finished_total"
    poll(lambda: fleet.worker_total(finished) >= done, what=f"{done} executions finished")


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
        mid_load(fleet)
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
        time.sleep(2)  # how long the outage lasts: the scenario, not a synchronisation
        own_redis.start()
        assert final_statuses(api, ids) == Counter({"COMPLETED": 100})
        assert all(w.running() for w in workers)
        # Graphs running when Redis dropped went on: none was stopped and handed back.
        assert fleet.worker_total("lg_deploy_attempts_stopped_total") == 0
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
        mid_load(fleet)
        postgres("restart")
        ids += submit(api, 20, WORK)
        assert final_statuses(api, ids) == Counter({"COMPLETED": 120})
        assert all(w.running() for w in workers)
    finally:
        fleet.stop_all()


def test_a_database_outage_repeats_no_finished_step(
    tmp_path: Path, database: str, redis_url: str
) -> None:
    """Six 40-step executions whose steps each append a line to a file; PostgreSQL stops
    for ten seconds mid-run. All complete, and in each at most the one step in flight when
    the outage hit ran twice: a failed checkpoint write stops the attempt at once."""
    fleet = make_fleet(tmp_path, database, redis_url)
    markers = [tmp_path / f"steps-{i}.txt" for i in range(6)]
    try:
        api = fleet.api()
        fleet.worker()
        fleet.worker()
        ids = submit_each(
            api, [{"steps": 40, "sleep_s": 0.2, "marker_file": str(m)} for m in markers]
        )
        poll(lambda: all(len(lines(m)) >= 5 for m in markers), what="five steps each")
        postgres("stop")
        try:
            time.sleep(10)  # how long the outage lasts: the scenario, not a synchronisation
        finally:
            postgres("start")
        assert final_statuses(api, ids) == Counter({"COMPLETED": 6})
        for marker in markers:
            runs = Counter(lines(marker))
            assert set(runs) == {str(i) for i in range(1, 41)}, marker
            repeated = [step for step, n in runs.items() if n > 1]
            assert len(repeated) <= 1 and max(runs.values()) <= 2, (marker, runs)
    finally:
        fleet.stop_all()


@pytest.mark.timeout(300)
def test_soak_with_random_worker_kills(tmp_path: Path, database: str, redis_url: str) -> None:
    """Two thousand executions while workers are SIGKILLed at random and replaced: every
    execution ends COMPLETED, and an execution ran its step twice only if a kill cut an
    attempt of it short (it shows two attempts)."""
    rng = random.Random(7)
    fleet = make_fleet(tmp_path, database, redis_url, LG_DEPLOY_WORKER_CONCURRENCY="8")
    markers = tmp_path / "markers"
    markers.mkdir()
    try:
        api = fleet.api()
        workers = [fleet.worker() for _ in range(3)]
        ids = submit_each(
            api,
            [
                {"steps": 1, "sleep_s": 0.01, "marker_file": str(markers / str(i))}
                for i in range(2000)
            ],
        )
        kills = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and kills < 6:
            time.sleep(rng.uniform(1.0, 3.0))  # the chaos schedule, not a synchronisation
            victim = workers.pop(rng.randrange(len(workers)))
            victim.signal(signal.SIGKILL)
            victim.wait(10)
            kills += 1
            workers.append(fleet.worker())
        counts = final_statuses(api, ids, timeout=300)
        assert counts == Counter({"COMPLETED": 2000})
        attempts_of = {e["execution_id"]: e["attempts"] for e in every_execution(api)}
        attempts = [attempts_of[e] for e in ids]
        runs = [len(lines(markers / str(i))) for i in range(2000)]
        assert all(n >= 1 for n in runs)
        assert all(n == 1 for n, a in zip(runs, attempts, strict=True) if a == 1)
        assert max(runs) <= 2
    finally:
        fleet.stop_all()
