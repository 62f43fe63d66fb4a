"""Streams across a fleet of real processes: a client of one API pod sees a run a worker
executes, and resumes on another pod after a disconnect; a run whose worker is SIGKILLed
resumes on another worker and its stream goes on to the end."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from langgraph_sdk import get_client

from tests.harness import Server, lines
from tests.platform_api.support import platform_fleet

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.timeout(120),
    # Set up before the test's event loop runs (the template database is migrated with
    # asyncio.run).
    pytest.mark.usefixtures("pg_admin", "pg_template", "redis_url"),
]


def owner_pid(database_url: str, run_id: str) -> int | None:
    """The pid of the worker holding the run's lease (host:pid:suffix)."""
    import psycopg

    conninfo = database_url.replace("postgresql+asyncpg://", "postgresql://")
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT lease_owner FROM executions WHERE execution_id = %s", (run_id,)
        ).fetchone()
    return None if row is None or row[0] is None else int(row[0].split(":")[1])


async def test_a_client_resumes_on_another_api_pod_and_misses_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A client streams a run from API pod A while a worker runs it, is cut off, and
    reconnects to pod B with Last-Event-ID: together it got every event of the run's
    stream exactly once, in order."""
    with platform_fleet(request, tmp_path) as fleet:
        pod_a, pod_b, _ = fleet.start(apis=2, workers=1)
        assert isinstance(pod_a, Server) and isinstance(pod_b, Server)
        a: Any = get_client(url=pod_a.url, api_key=None)
        b: Any = get_client(url=pod_b.url, api_key=None)
        try:
            thread = await a.threads.create()
            tid = thread["thread_id"]
            stream = a.runs.stream(
                tid, "slow", input={"steps": 6, "sleep_s": 0.2}, stream_mode=["updates", "values"]
            )
            before: list[Any] = []
            async for part in stream:
                before.append(part)
                if part.event == "updates" and part.data["step"]["done"] == 2:
                    break
            await stream.aclose()  # the connection to pod A is gone
            run_id = before[0].data["run_id"]
            after = [p async for p in b.runs.join_stream(tid, run_id, last_event_id=before[-1].id)]
            whole = [p async for p in b.runs.join_stream(tid, run_id, last_event_id="0-0")]
        finally:
            await a.aclose()
            await b.aclose()
    assert [p.id for p in before + after] == [p.id for p in whole]
    assert [(p.event, p.data) for p in before + after] == [(p.event, p.data) for p in whole]
    done = [p.data["step"]["done"] for p in whole if p.event == "updates"]
    assert done == [1, 2, 3, 4, 5, 6]
    assert whole[-1].event == "values" and whole[-1].data["completed"] == [1, 2, 3, 4, 5, 6]


async def test_sigkill_of_the_worker_mid_stream_the_stream_continues_to_the_end(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """SIGKILL the worker running a streamed run: another worker takes it over from its
    last checkpoint, announces attempt 2 on the same stream, and the stream goes on to
    the final values. No finished step runs again, and every step's update and values
    arrive, in order; only the step in flight may run, and arrive, twice."""
    marker = tmp_path / "steps.txt"
    with platform_fleet(request, tmp_path) as fleet:
        api, *_ = fleet.start(apis=1, workers=2)
        assert isinstance(api, Server)
        sdk: Any = get_client(url=api.url, api_key=None)
        parts: list[Any] = []
        try:
            thread = await sdk.threads.create()
            tid = thread["thread_id"]
            graph_input = {"steps": 6, "sleep_s": 0.5, "marker_file": str(marker)}
            async for part in sdk.runs.stream(
                tid, "slow", input=graph_input, stream_mode=["updates", "values"]
            ):
                parts.append(part)
                if part.event == "updates" and part.data["step"]["done"] == 2:
                    run_id = parts[0].data["run_id"]
                    # Step 2's update is streamed just before its checkpoint is written.
                    while (await sdk.threads.get_state(tid))["values"].get("done", 0) < 2:
                        await asyncio.sleep(0.02)
                    pid = owner_pid(fleet.env["LG_DEPLOY_DATABASE_URL"], run_id)
                    assert pid is not None
                    in_flight = {str(len(lines(marker))), str(len(lines(marker)) + 1)}
                    victim = fleet.worker_with_pid(pid)
                    victim.signal(signal.SIGKILL)
                    victim.wait(10)
            run = await sdk.runs.get(tid, run_id)
        finally:
            await sdk.aclose()
    assert run["status"] == "success"
    attempts = [p.data["attempt"] for p in parts if p.event == "metadata"]
    assert attempts == [1, 2]
    may_repeat = {int(step) for step in in_flight}
    done = [p.data["step"]["done"] for p in parts if p.event == "updates"]
    assert sorted(set(done)) == [1, 2, 3, 4, 5, 6]
    assert done == sorted(done)
    assert {step for step, n in Counter(done).items() if n > 1} <= may_repeat
    values = [p.data["done"] for p in parts if p.event == "values" and "done" in p.data]
    assert sorted(set(values)) == [1, 2, 3, 4, 5, 6] and values[-1] == 6
    assert {step for step, n in Counter(values).items() if n > 1} <= may_repeat
    ran = Counter(lines(marker))
    assert set(ran) == {str(i) for i in range(1, 7)}
    assert {step for step, n in ran.items() if n > 1} <= in_flight
