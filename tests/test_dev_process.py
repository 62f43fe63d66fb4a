"""``lg-deploy dev`` as a real process: the quickstart, a SIGKILL mid-execution with a
restart, and Ctrl-C."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import TEST_GRAPHS
from tests.processes import DevServer, running


def submit(server: DevServer, graph_id: str, input: Any) -> str:
    response = httpx.post(f"{server.url}/execute", json={"graph_id": graph_id, "input": input})
    assert response.status_code == 202, response.text
    execution_id: str = response.json()["execution_id"]
    return execution_id


def wait(server: DevServer, execution_id: str, timeout: float = 30) -> dict[str, Any]:
    response = httpx.get(
        f"{server.url}/executions/{execution_id}/wait",
        params={"timeout": timeout},
        timeout=timeout + 5,
    )
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def wait_for_lines(path: Path, count: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while len(lines(path)) < count:
        assert time.monotonic() < deadline, f"{path} has {lines(path)}"
        time.sleep(0.02)


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
        wait_for_lines(marker, 2)
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
        wait_for_lines(marker, 1)
        first.signal(signal.SIGINT)
        assert first.wait(15) == 0, first.log_tail()
        assert "handed back to the queue" in first.log_tail(80)
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
