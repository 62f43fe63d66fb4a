"""Pruning inside a real fleet under load (an API and two workers, PostgreSQL and Redis):
workers prune every 0.2 s in batches of 5, finished executions are due at once, and live
threads keep only their newest 2 checkpoints, while executions run on threads of their
own and on busy caller threads."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.harness import Fleet, Server, lines, poll, record, submit, wait

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PRUNING = {
    "LG_DEPLOY_PRUNE_INTERVAL_S": "0.2",
    "LG_DEPLOY_PRUNE_BATCH_SIZE": "5",
    "LG_DEPLOY_RETENTION_S": "0",
    "LG_DEPLOY_CHECKPOINTS_KEEP": "2",
    "LG_DEPLOY_WORKER_CONCURRENCY": "8",
}
STEPS = 3
TURNS = 5


def slow(marker: Path, turn: int = 0) -> dict[str, Any]:
    """The slow graph's input for the ``turn``-th execution on a thread: the thread's state
    has counted the earlier turns' steps, and this one runs STEPS more."""
    return {"steps": STEPS * (turn + 1), "sleep_s": 0.05, "marker_file": str(marker)}


def ran_once(marker: Path, turn: int = 0) -> bool:
    """Each step of the turn wrote its line once, and no other step wrote any."""
    expected = range(STEPS * turn + 1, STEPS * (turn + 1) + 1)
    return Counter(lines(marker)) == Counter(str(i) for i in expected)


def test_a_prune_under_load_loses_no_live_execution_and_repeats_no_step(
    fleet: Fleet, fleet_env: dict[str, str], tmp_path: Path
) -> None:
    """Guards the pruner's safety in production conditions: while two workers prune
    continuously, every execution runs each step once and completes, caller threads keep
    their whole state across turns, a paused execution still resumes, and what is pruned
    is exactly the finished work with nothing left depending on it."""
    started = fleet.start(apis=1, workers=2, **PRUNING)
    api = started[0]
    assert isinstance(api, Server)
    paused = submit(api, "approval", {"request": "r"}, retention_s=3600)
    markers: dict[str, tuple[Path, int]] = {}
    own_threads = []
    for i in range(30):  # due as soon as they finish
        marker = tmp_path / f"own-{i}.txt"
        execution_id = submit(api, "slow", slow(marker))
        markers[execution_id] = (marker, 0)
        own_threads.append(execution_id)
    last_turns = []
    for t in range(4):  # caller threads: turns queue behind each other, the last one kept
        for turn in range(TURNS):
            marker = tmp_path / f"conv-{t}-{turn}.txt"
            kept = {"retention_s": 3600} if turn == TURNS - 1 else {}
            execution_id = submit(api, "slow", slow(marker, turn), thread_id=f"conv-{t}", **kept)
            markers[execution_id] = (marker, turn)
            if kept:
                last_turns.append(execution_id)

    for execution_id in last_turns:
        done = wait(api, execution_id)
        assert (done["status"], done["attempts"]) == ("COMPLETED", 1)
        # Every turn's steps are in the thread's state: no checkpoint it needed was pruned.
        assert done["output"]["completed"] == list(range(1, STEPS * TURNS + 1))
    assert wait(api, paused)["status"] == "INTERRUPTED"
    total = len(markers)
    poll(
        lambda: (
            fleet.worker_total("lg_deploy_executions_finished_total", status="COMPLETED") == total
        ),
        what="every execution finished",
    )
    for execution_id, (marker, turn) in markers.items():
        assert ran_once(marker, turn), (execution_id, lines(marker))
    assert fleet.worker_total("lg_deploy_attempts_started_total") == total + 1  # + paused

    # Everything due goes: the own threads, the caller threads' earlier turns.
    pruned = total - len(last_turns)
    poll(
        lambda: fleet.worker_total("lg_deploy_pruned_executions_total") == pruned,
        what="every finished execution pruned",
    )
    for execution_id in own_threads:
        assert httpx.get(f"{api.url}/executions/{execution_id}").status_code == 404
    conninfo = fleet_env["LG_DEPLOY_DATABASE_URL"].replace("postgresql+asyncpg", "postgresql")

    def query(sql: str, *params: Any) -> Any:
        with psycopg.connect(conninfo) as conn:
            return conn.execute(sql, params).fetchone()

    assert query("SELECT count(*) FROM checkpoints WHERE thread_id = ANY(%s)", own_threads) == (0,)
    # The idle caller threads are trimmed to their newest 2 checkpoints.
    longest = (
        "SELECT max(n) FROM (SELECT count(*) AS n FROM checkpoints "
        "WHERE thread_id LIKE 'conv-%%' GROUP BY thread_id, checkpoint_ns) AS c"
    )
    poll(lambda: query(longest) == (2,), what="caller threads trimmed to 2 checkpoints")

    # What was kept still runs on: the paused execution resumes and completes.
    response = httpx.post(f"{api.url}/executions/{paused}/resume", json={"resume": "yes"})
    assert response.status_code == 202, response.text
    assert wait(api, paused)["output"]["status"] == "published"
    assert record(api, last_turns[0])["status"] == "COMPLETED"
    assert fleet.worker_total("lg_deploy_prune_failures_total") == 0
