"""The fleet under the faults an adversarial user finds, with real `lg-deploy api` and
`lg-deploy worker` processes on PostgreSQL and Redis: a node that blocks its worker's
event loop, a thousand long polls, concurrent retries of one request across API
processes, a backlog the reconciler revives, a worker whose clock is off, and HTTP
clients that misbehave."""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Fleet, Worker, lines, poll, scrape, submit, wait

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


def slow(marker: Path, steps: int, sleep_s: float) -> dict[str, Any]:
    return {"steps": steps, "sleep_s": sleep_s, "marker_file": str(marker)}


def ran_once(marker: Path, steps: int) -> bool:
    return Counter(lines(marker)) == Counter(str(i) for i in range(1, steps + 1))


def test_a_node_blocking_the_event_loop_harms_no_other_execution(
    fleet: Fleet, tmp_path: Path
) -> None:
    """An async node that sleeps 6 s (the lease is 3 s) beside ten 20-step executions on
    two workers: no lease is lost, no step runs twice, the blocking execution completes on
    its first attempt, and the workers count the block against its graph."""
    env = {"LG_DEPLOY_LEASE_S": "3"}
    api = fleet.api(**env)
    workers = [fleet.worker(**env), fleet.worker(**env)]
    blocker = submit(api, "loop_blocker", {"block_s": 6})
    markers = [tmp_path / f"{i}.txt" for i in range(10)]
    ids = [submit(api, "slow", slow(m, steps=20, sleep_s=0.1)) for m in markers]
    records = [wait(api, e) for e in (blocker, *ids)]
    assert [(r["status"], r["attempts"]) for r in records] == [("COMPLETED", 1)] * 11
    assert all(ran_once(m, 20) for m in markers)
    blocked = "lg_deploy_event_loop_blocked_total"
    assert sum(w.metrics().value(blocked, graph_id="loop_blocker") for w in workers) == 1
    assert fleet.worker_total("lg_deploy_reconciler_recovered_total") == 0
    assert fleet.worker_total("lg_deploy_attempts_stopped_total") == 0


def test_a_loop_blocked_past_its_limit_fails_the_culprit_and_frees_the_rest(
    fleet: Fleet, tmp_path: Path
) -> None:
    """A node that blocks its worker's loop past LG_DEPLOY_LOOP_BLOCK_LIMIT_S: the worker's
    liveness fails while it lasts, the blocking execution fails as event_loop_blocked, and
    an execution stuck on the same loop is taken over by another worker and completes."""
    stuck = fleet.worker(LG_DEPLOY_LOOP_BLOCK_LIMIT_S="2")
    api = fleet.api()
    marker = tmp_path / "steps.txt"
    beside = submit(api, "slow", slow(marker, steps=10, sleep_s=0.2))
    poll(lambda: len(lines(marker)) >= 1, what="the other execution started")
    blocker = submit(api, "loop_blocker", {"block_s": 9})
    poll(lambda: httpx.get(f"{stuck.url}/healthz").status_code == 503, timeout=15, what="liveness")
    assert "event loop" in httpx.get(f"{stuck.url}/healthz").json()["reason"]
    fleet.worker()  # a healthy worker takes over what the stuck one held
    failed = wait(api, blocker)
    assert failed["status"] == "FAILED"
    assert failed["error"]["type"] == "event_loop_blocked"
    assert "'block_the_loop'" in failed["error"]["message"]
    done = wait(api, beside)
    assert (done["status"], done["attempts"]) == ("COMPLETED", 2)
    runs = Counter(lines(marker))
    assert set(runs) == {str(i) for i in range(1, 11)} and max(runs.values()) <= 2
    poll(lambda: httpx.get(f"{stuck.url}/healthz").status_code == 200, what="the loop back")


def test_a_thousand_long_polls_hold_no_connections(fleet: Fleet) -> None:
    """1,000 concurrent GET /wait on one API process while submissions go on: every poll
    answers 200 at its timeout, every submission 202, and nothing answers 503."""
    api = fleet.api()
    execution_id = submit(api, "steps", {"text": "no worker runs this"})

    async def load() -> tuple[list[int], list[int]]:
        limits = httpx.Limits(max_connections=1200, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=api.url, limits=limits, timeout=60) as client:
            polls = [
                asyncio.create_task(
                    client.get(f"/executions/{execution_id}/wait", params={"timeout": 4})
                )
                for _ in range(1000)
            ]
            await asyncio.sleep(1)  # let the polls arrive and park
            submitted = [
                (await client.post("/execute", json={"graph_id": "steps", "input": {}}))
                for _ in range(20)
            ]
            answered = await asyncio.gather(*polls)
        return [r.status_code for r in answered], [r.status_code for r in submitted]

    polled, submitted = asyncio.run(load())
    assert Counter(polled) == Counter({200: 1000})
    assert Counter(submitted) == Counter({202: 20})
    errors = scrape(api.url).value("lg_deploy_http_requests_total", status="503")
    assert errors == 0


def test_retries_of_one_request_across_api_processes_all_get_the_replay(
    fleet: Fleet, tmp_path: Path
) -> None:
    """60 concurrent requests with one Idempotency-Key and multitask_strategy reject, spread
    over two `lg-deploy api` pods of two server processes each: one execution is created
    and every other request gets it back as a replay, never 409 thread_busy."""
    apis = [fleet.api(LG_DEPLOY_API_WORKERS="2"), fleet.api(LG_DEPLOY_API_WORKERS="2")]
    body = {
        "graph_id": "slow",
        "input": {"steps": 1, "sleep_s": 0},
        "thread_id": "one-thread",
        "multitask_strategy": "reject",
    }

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        f"{apis[i % 2].url}/execute",
                        json=body,
                        headers={"Idempotency-Key": "order-7"},
                    )
                    for i in range(60)
                )
            )

    answers = asyncio.run(burst())
    assert Counter(r.status_code for r in answers) == Counter({202: 60})
    assert len({r.json()["execution_id"] for r in answers}) == 1
    replays = [r.headers.get("idempotent-replayed") == "true" for r in answers]
    assert replays.count(False) == 1


@pytest.mark.slow
def test_a_backlog_starts_every_job_once(fleet: Fleet, tmp_path: Path) -> None:
    """A backlog the reconciler revives many times over (it runs every 0.3 s) on two
    workers: every execution completes, and no queue delivery found its execution already
    taken (no job was started twice)."""
    env = {"LG_DEPLOY_RECONCILE_INTERVAL_S": "0.3", "LG_DEPLOY_WORKER_CONCURRENCY": "2"}
    api = fleet.api()
    workers = [fleet.worker(**env), fleet.worker(**env)]
    ids = [submit(api, "slow", {"steps": 1, "sleep_s": 0.05}) for _ in range(120)]
    assert Counter(wait(api, e)["status"] for e in ids) == Counter({"COMPLETED": 120})
    # The reconciler found every waiting job in line: none lost, none enqueued again.
    assert sum(w.metrics().value("lg_deploy_reconciler_revived_total") for w in workers) == 0
    assert fleet.worker_total("lg_deploy_deliveries_unclaimed_total") == 0
    assert fleet.worker_total("lg_deploy_attempts_started_total") == 120


def test_a_worker_whose_clock_runs_ahead_takes_no_lease_over(fleet: Fleet, tmp_path: Path) -> None:
    """A worker whose clock is 40 s ahead (libfaketime) reconciles beside a worker running
    an execution: leases are measured on the database's clock, so it takes nothing over."""
    if shutil.which("faketime") is None or not LIBFAKETIME.exists():
        pytest.fail("this test needs libfaketime (Debian: apt-get install faketime)")
    api = fleet.api()
    fleet.worker()
    marker = tmp_path / "steps.txt"
    execution_id = submit(api, "slow", slow(marker, steps=12, sleep_s=0.3))
    poll(lambda: len(lines(marker)) >= 1, what="a first step")
    ahead: Worker = fleet.worker(
        LD_PRELOAD=str(LIBFAKETIME), FAKETIME="+40s", FAKETIME_DONT_FAKE_MONOTONIC="1"
    )
    seen = ahead.metrics()
    assert seen.value("lg_deploy_worker_last_reconcile_timestamp_seconds") > time.time() + 30
    done = wait(api, execution_id)
    assert (done["status"], done["attempts"]) == ("COMPLETED", 1)
    assert ahead.metrics().value("lg_deploy_reconciler_recovered_total") == 0
    assert ran_once(marker, 12)


def raw_request(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send bytes on a socket, as a broken client might, and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_misbehaving_http_clients_get_clear_answers(fleet: Fleet) -> None:
    """HEAD on the probes answers 200; a body that is not UTF-8 is 400 malformed_json; a
    Content-Length larger than the body sent gets 408 after LG_DEPLOY_BODY_TIMEOUT_S
    instead of holding the request open; nothing of it is written."""
    api = fleet.api(LG_DEPLOY_BODY_TIMEOUT_S="1")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.head(f"{api.url}{path}").status_code == 200, path
    not_utf8 = httpx.post(
        f"{api.url}/execute",
        content=b'{"graph_id": "steps", "input": "\xff"}',
        headers={"content-type": "application/json"},
    )
    assert not_utf8.status_code == 400
    assert not_utf8.json()["error"]["code"] == "malformed_json"
    short = b'{"graph_id": "steps"'
    started = time.monotonic()
    answer = raw_request(
        api.port,
        b"POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + short,
    )
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    assert time.monotonic() - started < 8
    assert httpx.get(f"{api.url}/executions").json()["items"] == []
