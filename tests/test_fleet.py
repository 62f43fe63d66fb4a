"""The distributed fleet with real processes: `lg-deploy api` and `lg-deploy worker`
against a real PostgreSQL and a real Redis, with real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.harness import Fleet, Process, free_port, lines, poll, post, record, scrape, submit, wait

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def owner_pid(pg_url: str, execution_id: str) -> int | None:
    """The pid of the worker holding the execution's lease (host:pid:suffix)."""
    import psycopg

    conninfo = pg_url.replace("postgresql+asyncpg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT lease_owner FROM executions WHERE execution_id = %s", (execution_id,)
        ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0].split(":")[1])


def assert_steps_ran_once(marker: Path, steps: int, in_flight: set[str]) -> None:
    """Every step ran; only a step in flight at a crash may have run twice."""
    runs = Counter(lines(marker))
    assert set(runs) == {str(i) for i in range(1, steps + 1)}, runs
    repeated = {step for step, n in runs.items() if n > 1}
    assert repeated <= in_flight, (runs, in_flight)


def test_n_executions_through_one_api_and_three_workers(fleet: Fleet) -> None:
    """100 executions through 1 API and 3 workers: all COMPLETED, each started and completed
    exactly once, none lost, the work shared. The API runs two server processes, and its
    /metrics counts the submissions of both. Two workers run on uvloop (the default where it
    is installed, as it is here), the third on asyncio's own loop (run/loops.py)."""
    api = fleet.api(LG_DEPLOY_API_WORKERS="2")
    workers = [fleet.worker(), fleet.worker(), fleet.worker(LG_DEPLOY_EVENT_LOOP="asyncio")]
    loops = ["uvloop", "uvloop", "asyncio"]
    for worker, loop in zip(workers, loops, strict=True):
        assert f"event loop: {loop}" in worker.log_tail(200)
    ids = [submit(api, "steps", {"text": f"n{i}"}) for i in range(100)]
    records = [wait(api, execution_id) for execution_id in ids]
    assert [r["status"] for r in records] == ["COMPLETED"] * 100
    assert [r["output"]["text"] for r in records] == [f"N{i}!" for i in range(100)]
    assert {r["attempts"] for r in records} == {1}
    assert fleet.worker_total("lg_deploy_attempts_started_total", graph_id="steps") == 100
    completed = [
        w.metrics().value("lg_deploy_executions_finished_total", status="COMPLETED")
        for w in workers
    ]
    assert sum(completed) == 100
    assert sum(1 for n in completed if n) >= 2, completed
    listed = httpx.get(f"{api.url}/executions", params={"status": "COMPLETED", "limit": 1000})
    assert sorted(e["execution_id"] for e in listed.json()["items"]) == sorted(ids)
    # Whichever server process answers the scrape, it counts the submissions of both.
    for _ in range(4):
        submitted = scrape(api.url).value("lg_deploy_executions_submitted_total")
        assert submitted == 100


def test_a_worker_serves_metrics_and_probes(fleet: Fleet) -> None:
    """A worker's metrics port serves Prometheus metrics (attempts, slots, heartbeats) and
    answers its liveness and readiness probes, GET and HEAD."""
    api = fleet.api()
    worker = fleet.worker(LG_DEPLOY_WORKER_CONCURRENCY="3")
    assert wait(api, submit(api, "steps", {"text": "m"}))["status"] == "COMPLETED"
    seen = worker.metrics()
    assert seen.value("lg_deploy_executions_finished_total", graph_id="steps") == 1
    assert seen.value("lg_deploy_attempts_started_total", graph_id="steps") == 1
    assert seen.value("lg_deploy_worker_slots") == 3
    assert seen.value("lg_deploy_worker_slots_busy") == 0
    assert seen.value("lg_deploy_queue_wait_seconds_count", graph_id="steps") == 1
    assert seen.value("lg_deploy_worker_last_reconcile_timestamp_seconds") > 0
    for path in ("/healthz", "/readyz"):
        assert httpx.get(f"{worker.url}{path}").json() == {"status": "ok"}
        assert httpx.head(f"{worker.url}{path}").status_code == 200


def test_sigkill_a_worker_mid_execution_another_resumes_from_the_checkpoint(
    fleet: Fleet, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGKILL the worker running a multi-step execution: another worker resumes it
    within about a lease period, and the steps finished before the kill do not run again."""
    api = fleet.api()
    fleet.worker()
    fleet.worker()
    marker = tmp_path / "steps.txt"
    execution_id = submit(api, "slow", {"steps": 8, "sleep_s": 0.3, "marker_file": str(marker)})
    poll(lambda: len(lines(marker)) >= 3, what="three steps")
    pid = owner_pid(fleet_env["LG_DEPLOY_DATABASE_URL"], execution_id)
    assert pid is not None
    victim = fleet.worker_with_pid(pid)
    before = lines(marker)
    victim.signal(signal.SIGKILL)
    victim.wait(10)
    # Lease 2 s and a reconciler every 0.5 s; ARQ alone would wait out its job timeout.
    # (python -m bench --only recovery measures the recovery time.)
    poll(lambda: record(api, execution_id)["attempts"] == 2, timeout=20, what="a second attempt")
    done = wait(api, execution_id)
    assert done["status"] == "COMPLETED"
    assert done["output"]["completed"] == list(range(1, 9))
    assert_steps_ran_once(marker, 8, in_flight={before[-1], str(len(before) + 1)})


def test_a_zombie_worker_cannot_change_the_record(
    fleet: Fleet, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """A worker paused (SIGSTOP) past its lease and continued (SIGCONT) after another
    worker finished the execution changes neither the record nor the thread."""
    api = fleet.api()
    fleet.worker()
    fleet.worker()
    marker = tmp_path / "steps.txt"
    execution_id = submit(
        api, "slow", {"steps": 6, "sleep_s": 0.3, "marker_file": str(marker)}, thread_id="z"
    )
    poll(lambda: len(lines(marker)) >= 2, what="two steps")
    pid = owner_pid(fleet_env["LG_DEPLOY_DATABASE_URL"], execution_id)
    assert pid is not None
    zombie = fleet.worker_with_pid(pid)
    zombie.signal(signal.SIGSTOP)
    try:
        done = wait(api, execution_id)
        assert done["status"] == "COMPLETED"
    finally:
        zombie.signal(signal.SIGCONT)
    # The zombie wakes up, finds its lease gone, and stops its graph.
    poll(
        lambda: zombie.metrics().value("lg_deploy_attempts_stopped_total", reason="lease_lost"),
        what="the zombie stopping its graph",
    )
    after = record(api, execution_id)
    assert after["status"] == "COMPLETED"
    assert after["output"] == done["output"]
    assert after["finished_at"] == done["finished_at"]
    assert after["updated_at"] == done["updated_at"]
    # The thread's newest state is still the finished one: a new execution sees it.
    again = wait(api, submit(api, "slow", {"steps": 0}, thread_id="z"))
    assert again["status"] == "COMPLETED"
    assert again["output"]["completed"] == list(range(1, 7))


def test_sigterm_hands_the_running_execution_back_without_using_an_attempt(
    fleet: Fleet, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """SIGTERM during a run: after the drain period the execution is handed back, another
    worker finishes it, and the attempt is not counted."""
    api = fleet.api()
    fleet.worker()
    marker = tmp_path / "steps.txt"
    execution_id = submit(api, "slow", {"steps": 10, "sleep_s": 0.3, "marker_file": str(marker)})
    poll(lambda: len(lines(marker)) >= 1, what="a first step")
    pid = owner_pid(fleet_env["LG_DEPLOY_DATABASE_URL"], execution_id)
    assert pid is not None
    first = fleet.worker_with_pid(pid)
    first.signal(signal.SIGTERM)
    assert first.wait(20) == 0, first.log_tail()
    handed_back = record(api, execution_id)
    assert handed_back["status"] == "QUEUED"
    assert handed_back["attempts"] == 0  # handed back, not lost: no attempt used
    fleet.worker()
    done = wait(api, execution_id)
    assert done["status"] == "COMPLETED"
    assert done["attempts"] == 1
    assert done["output"]["completed"] == list(range(1, 11))


def test_sigterm_lets_a_short_execution_finish_within_the_drain_period(
    fleet: Fleet, tmp_path: Path
) -> None:
    """With a drain period longer than the work left, SIGTERM waits for the execution
    to complete before the worker exits."""
    api = fleet.api()
    worker = fleet.worker(LG_DEPLOY_DRAIN_S="15")
    marker = tmp_path / "steps.txt"
    execution_id = submit(api, "slow", {"steps": 4, "sleep_s": 0.3, "marker_file": str(marker)})
    poll(lambda: len(lines(marker)) >= 1, what="a first step")
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.log_tail()
    done = record(api, execution_id)
    assert done["status"] == "COMPLETED"
    assert done["attempts"] == 1


def test_a_second_sigterm_hands_back_at_once(
    fleet: Fleet, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """During a long drain, a second SIGTERM hands the running execution back at once and
    the worker exits cleanly."""
    api = fleet.api()
    worker = fleet.worker(LG_DEPLOY_DRAIN_S="120")
    marker = tmp_path / "steps.txt"
    execution_id = submit(api, "slow", {"steps": 40, "sleep_s": 0.3, "marker_file": str(marker)})
    poll(lambda: len(lines(marker)) >= 1, what="a first step")
    worker.signal(signal.SIGTERM)
    poll(lambda: httpx.get(f"{worker.url}/readyz").status_code == 503, what="the drain")
    assert record(api, execution_id)["status"] == "RUNNING"  # still draining
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0, worker.log_tail()
    handed_back = record(api, execution_id)
    assert handed_back["status"] == "QUEUED"
    assert handed_back["attempts"] == 0


def test_cancel_stops_a_graph_running_in_another_process(fleet: Fleet, tmp_path: Path) -> None:
    """POST /cancel on the API stops the graph on a worker process within about a second."""
    api = fleet.api(LG_DEPLOY_LEASE_S="30")
    worker = fleet.worker(LG_DEPLOY_LEASE_S="30")  # a long lease: only the nudge is fast
    marker = tmp_path / "steps.txt"
    execution_id = submit(api, "slow", {"steps": 50, "sleep_s": 0.1, "marker_file": str(marker)})
    poll(lambda: len(lines(marker)) >= 2, what="two steps")
    response = httpx.post(f"{api.url}/executions/{execution_id}/cancel")
    assert response.json()["status"] == "CANCELLED"
    # The lease renewal would notice only after lease / 3 = 10 s: the nudge stops it first.
    stopped = "lg_deploy_attempts_stopped_total"
    poll(lambda: worker.metrics().value(stopped, reason="cancelled"), timeout=5)
    assert worker.metrics().value("lg_deploy_worker_slots_busy") == 0  # the graph has ended
    assert len(lines(marker)) < 50
    assert record(api, execution_id)["status"] == "CANCELLED"


def test_busy_thread_rejects_or_queues_behind(fleet: Fleet, tmp_path: Path) -> None:
    """On a busy thread, multitask_strategy=reject answers 409 and writes nothing; the
    default queues behind and runs after the first."""
    api = fleet.api()
    fleet.worker()
    fleet.worker()
    first = submit(api, "slow", {"steps": 3, "sleep_s": 0.3}, thread_id="busy")
    quick = {"steps": 1, "sleep_s": 0}
    rejected = post(api, "slow", quick, thread_id="busy", multitask_strategy="reject")
    assert rejected.status_code == 409
    assert rejected.json()["error"]["code"] == "thread_busy"
    second = submit(api, "slow", quick, thread_id="busy")
    one, two = wait(api, first), wait(api, second)
    assert one["status"] == two["status"] == "COMPLETED"
    assert one["finished_at"] <= two["started_at"]
    listed = httpx.get(f"{api.url}/executions", params={"thread_id": "busy"}).json()["items"]
    assert sorted(e["execution_id"] for e in listed) == sorted([first, second])
    after = submit(api, "slow", quick, thread_id="busy", multitask_strategy="reject")
    assert wait(api, after)["status"] == "COMPLETED"


def test_backpressure_answers_429_with_retry_after(fleet: Fleet) -> None:
    """Past LG_DEPLOY_MAX_QUEUE_DEPTH, POST /execute answers 429 with Retry-After and
    writes nothing."""
    api = fleet.api(LG_DEPLOY_MAX_QUEUE_DEPTH="3")  # no worker: nothing drains the queue
    accepted = [submit(api, "steps", {"text": str(i)}) for i in range(3)]
    refused = post(api, "steps", {"text": "one too many"})
    assert refused.status_code == 429
    assert refused.headers["retry-after"].isdigit()
    assert refused.json()["error"]["code"] == "queue_full"
    assert refused.json()["error"]["details"] == {"depth": 3, "limit": 3}
    listed = httpx.get(f"{api.url}/executions").json()["items"]
    assert sorted(e["execution_id"] for e in listed) == sorted(accepted)


def test_api_keys_protect_every_route_but_health(fleet: Fleet) -> None:
    """With LG_DEPLOY_API_KEYS set, requests without a valid key get 401; Bearer and
    X-Api-Key both work; /healthz and /readyz stay open."""
    api = fleet.api(LG_DEPLOY_API_KEYS="k1,k2")
    body = {"graph_id": "steps", "input": {"text": "x"}}
    for headers in ({}, {"Authorization": "Bearer nope"}, {"X-Api-Key": "nope"}):
        response = httpx.post(f"{api.url}/execute", json=body, headers=headers)
        assert response.status_code == 401, headers
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"
    for path in ("/executions", "/graphs", "/openapi.json"):
        assert httpx.get(f"{api.url}{path}").status_code == 401, path
    assert httpx.get(f"{api.url}/executions").json()["error"]["code"] == "unauthorized"
    ok = httpx.post(f"{api.url}/execute", json=body, headers={"Authorization": "Bearer k1"})
    assert ok.status_code == 202
    listed = httpx.get(f"{api.url}/executions", headers={"X-Api-Key": "k2"})
    assert listed.status_code == 200
    assert len(listed.json()["items"]) == 1
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(f"{api.url}{path}").status_code == 200, path


def consecutive_free_ports(count: int) -> int:
    """The first of ``count`` free ports in a row."""
    while True:
        first = free_port()
        try:
            for offset in range(1, count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", first + offset))
            return first
        except OSError:
            continue


def children(pid: int) -> list[int]:
    listed = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in listed.stdout.split()]


def test_one_command_runs_several_worker_processes(fleet: Fleet, tmp_path: Path) -> None:
    """`lg-deploy worker --processes 2` runs two whole workers, each on its own metrics
    port: both take work, one killed is started again, and SIGTERM stops them all."""
    api = fleet.api()
    port = consecutive_free_ports(2)
    urls = [f"http://127.0.0.1:{port + i}" for i in range(2)]
    env = {**fleet.env, "LG_DEPLOY_METRICS_PORT": str(port), "LG_DEPLOY_WORKER_CONCURRENCY": "2"}
    supervisor = Process(["worker", "--processes", "2"], tmp_path / "workers.log", env)
    fleet.processes.append(supervisor.start())
    for url in urls:
        supervisor.wait_answering(f"{url}/readyz")
    ids = [submit(api, "slow", {"steps": 1, "sleep_s": 0.3}) for _ in range(12)]
    assert {wait(api, e)["status"] for e in ids} == {"COMPLETED"}
    started = [scrape(url).value("lg_deploy_attempts_started_total") for url in urls]
    assert sum(started) == 12 and all(started), started
    first = min(children(supervisor.pid))
    os.kill(first, signal.SIGKILL)
    poll(lambda: first not in children(supervisor.pid) and len(children(supervisor.pid)) == 2)
    for url in urls:
        supervisor.wait_answering(f"{url}/readyz")
    workers = children(supervisor.pid)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(30) == 0, supervisor.log_tail()
    assert len(workers) == 2 and not [p for p in workers if Path(f"/proc/{p}").exists()]
