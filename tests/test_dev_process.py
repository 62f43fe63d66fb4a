"""``lg-deploy dev`` as a real process: the quickstart, a SIGKILL mid-execution with a
restart, and Ctrl-C."""

from __future__ import annotations

import json
import signal
import sqlite3
import uuid
from collections import Counter
from pathlib import Path

import httpx

from tests.conftest import TEST_GRAPHS
from tests.harness import DevServer, lines, poll, running, submit, wait


def test_sigkill_mid_execution_then_restart_resumes_from_the_checkpoint(tmp_path: Path) -> None:
    """SIGKILL `lg-deploy dev` during a multi-step execution, start it again: the execution
    completes and the steps that finished before the kill do not run again."""
    database_url = f"sqlite+aiosqlite:///{tmp_path}/dev.db"
    marker = tmp_path / "steps.txt"
    first = DevServer(TEST_GRAPHS, database_url, tmp_path / "first.log").start()
    second = DevServer(TEST_GRAPHS, database_url, tmp_path / "second.log")
    with running(first, second):
        first.wait_ready()
        quick = submit(first, "steps", {"text": "hello"})
        assert wait(first, quick)["output"] == {"text": "HELLO!", "steps": ["upper", "exclaim"]}

        execution_id = submit(
            first, "slow", {"steps": 6, "sleep_s": 0.4, "marker_file": str(marker)}
        )
        poll(lambda: len(lines(marker)) >= 2, what="two steps")
        first.signal(signal.SIGKILL)
        first.wait(10)
        before_kill = lines(marker)

        second.start()
        second.wait_ready()
        record = wait(second, execution_id)
        assert record["status"] == "COMPLETED", second.log_tail()
        assert record["output"]["completed"] == [1, 2, 3, 4, 5, 6]
        assert record["attempts"] == 2
        runs = Counter(lines(marker))
        assert set(runs) == {str(i) for i in range(1, 7)}
        # Only the step in flight at the kill may run twice; finished steps never do.
        repeated = [step for step, n in runs.items() if n > 1]
        assert repeated in ([], [before_kill[-1]]), runs
        assert sum(runs.values()) <= 7


def test_ctrl_c_stops_cleanly_and_hands_the_execution_back(tmp_path: Path) -> None:
    """SIGINT stops `lg-deploy dev` with exit code 0; the running execution is handed back
    (not failed) and finishes after the next start."""
    database_url = f"sqlite+aiosqlite:///{tmp_path}/dev.db"
    marker = tmp_path / "steps.txt"
    first = DevServer(TEST_GRAPHS, database_url, tmp_path / "first.log").start()
    second = DevServer(TEST_GRAPHS, database_url, tmp_path / "second.log")
    with running(first, second):
        first.wait_ready()
        execution_id = submit(
            first, "slow", {"steps": 4, "sleep_s": 0.4, "marker_file": str(marker)}
        )
        poll(lambda: len(lines(marker)) >= 1, what="a step")
        first.signal(signal.SIGINT)
        assert first.wait(15) == 0, first.log_tail()
        with sqlite3.connect(tmp_path / "dev.db") as db:
            row = db.execute(
                "SELECT status, attempt, handbacks FROM executions WHERE execution_id = ?",
                (uuid.UUID(execution_id).hex,),
            ).fetchone()
        assert row == ("QUEUED", 1, 1)  # handed back: one claim, given back unused
        second.start()
        second.wait_ready()
        record = wait(second, execution_id)
        assert record["status"] == "COMPLETED"
        assert record["output"]["completed"] == [1, 2, 3, 4]


def test_a_broken_graph_config_fails_at_start_with_a_clear_message(tmp_path: Path) -> None:
    """A langgraph.json entry that does not import stops `lg-deploy dev` at start-up with
    the file, the graph and the reason, and exit code 2."""
    config = tmp_path / "langgraph.json"
    config.write_text('{"graphs": {"mine": "./missing.py:graph"}}')
    server = DevServer(config, f"sqlite+aiosqlite:///{tmp_path}/dev.db", tmp_path / "dev.log")
    with running(server.start()):
        assert server.wait(30) == 2
    tail = server.log_tail()
    assert f"{config}: graph 'mine'" in tail
    assert "missing.py does not exist" in tail


def test_json_logs_follow_a_request_into_its_execution(tmp_path: Path) -> None:
    """With LG_DEPLOY_LOG_FORMAT=json every line is a JSON object, and the lines of a
    submission (the access log) and of its execution (the worker's) carry its request id,
    the latter with the execution, graph, thread and attempt."""
    server = DevServer(
        TEST_GRAPHS,
        f"sqlite+aiosqlite:///{tmp_path}/dev.db",
        tmp_path / "dev.log",
        LG_DEPLOY_LOG_FORMAT="json",
    )
    with running(server.start()):
        server.wait_ready()
        response = httpx.post(
            f"{server.url}/execute",
            json={"graph_id": "steps", "input": {"text": "x"}, "thread_id": "t-1"},
            headers={"X-Request-ID": "follow-me"},
        )
        execution_id = response.json()["execution_id"]
        assert wait(server, execution_id)["status"] == "COMPLETED"
        server.signal(signal.SIGINT)
        server.wait(15)
    records = [json.loads(line) for line in lines(server.log_path)]
    assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    mine = [r for r in records if r.get("request_id") == "follow-me"]
    assert {r["logger"] for r in mine} >= {"lg_deploy.access", "lg_deploy.worker"}
    worker = [r for r in mine if r["logger"] == "lg_deploy.worker"]
    assert all(r["execution_id"] == execution_id for r in worker)
    assert all((r["graph_id"], r["thread_id"], r["attempt"]) == ("steps", "t-1", 1) for r in worker)
    assert all(r["worker"] for r in worker)
