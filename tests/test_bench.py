"""The benchmarks keep working: their smoke run and their round-trip counting. Figures are
reported, never asserted (BENCHMARKS.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import psycopg
import pytest
import redis

from bench.proxy import Proxies
from bench.stack import address, with_address
from tests.conftest import ROOT, PgAdmin

FIGURES = [
    "limit.executions_per_s",
    "limit.cpu_ms.in_process",
    "end_to_end.0.executions_per_s",
    "end_to_end.0.ratio_to_limit",
    "end_to_end.0.cpu_ms.workers",
    "end_to_end.1.executions_per_s",
    "round_trips.per_execution.postgres",
    "round_trips.per_execution.worker_checkpointer",
    "round_trips.per_execution.redis",
    "round_trips.idle_per_s.redis",
    "submit.0.p50_ms",
    "submit.1.p99_ms",
    "submit.1.submissions_per_s",
    "pickup.idle.p50_ms",
    "pickup.under_load.p99_ms",
    "io_bound.ratio",
    "memory.rss_mb",
    "memory.slope_kb_per_1000",
    "memory.late_executions",
    "history.0.executions_per_s",
    "history.1.cpu_ms.postgres",
    "history.1.list_p50_ms",
    "thread.new.ms_per_execution",
    "thread.busy.cpu_ms.postgres",
]


def figure(figures: dict[str, object], path: str) -> object:
    found: object = figures
    for key in path.split("."):
        found = found[int(key)] if isinstance(found, list) else found[key]  # type: ignore[index]
    return found


def run_bench(module_args: list[str], out: Path, timeout: float) -> tuple[str, Any]:
    """``python -m <module_args> --json <out>`` from the repository: what it printed, and
    what it wrote."""
    run = subprocess.run(
        [sys.executable, "-m", *module_args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return run.stdout, json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_smoke_run_reports_every_figure(pg_admin: PgAdmin, redis_url: str, tmp_path: Path) -> None:
    """`python -m bench --smoke` runs every scenario on the real stack and reports every figure."""
    printed, result = run_bench(["bench", "--smoke"], tmp_path / "bench.json", timeout=280)
    assert "end to end, 1 worker(s)" in printed
    figures = result["figures"]
    missing = [path for path in FIGURES if not isinstance(figure(figures, path), int | float)]
    assert missing == []
    assert [level["clients"] for level in figures["submit"]] == [1, 4]
    assert [row["executions_in_store"] for row in figures["history"]] == [0, 1000]
    per_execution = figures["round_trips"]["per_execution"]
    for part in ("api_postgres", "worker_store", "worker_checkpointer", "api_redis"):
        assert per_execution[part] > 0, part


@pytest.mark.postgres
@pytest.mark.redis
def test_proxies_count_round_trips_not_messages(pg_admin: PgAdmin, redis_url: str) -> None:
    """The proxies count a pipeline as one round trip, a prepared asyncpg statement as two."""
    proxies = Proxies()
    try:
        pg = proxies.open("pg", "postgres", address(pg_admin.conninfo))
        cache = proxies.open("redis", "redis", address(redis_url))
        url = with_address(pg_admin.conninfo, pg)

        async def with_asyncpg() -> None:
            conn = await asyncpg.connect(url)
            await conn.fetchval("SELECT 1")  # Parse+Describe+Flush, then Bind+Execute+Sync
            await conn.fetchval("SELECT 1")  # prepared: Bind+Execute+Sync
            await conn.close()

        asyncio.run(with_asyncpg())
        with psycopg.connect(url, autocommit=True) as conn, conn.pipeline():
            conn.execute("SELECT 1")
            conn.execute("SELECT 2")
        client = redis.Redis.from_url(with_address(redis_url, cache))
        with client.pipeline(transaction=False) as pipe:
            pipe.ping()
            pipe.ping()
            pipe.execute()
        client.close()
        counts = proxies.counts()
    finally:
        proxies.close()
    assert counts["pg"].round_trips == {"asyncpg": 3, "psycopg": 1}
    assert counts["pg"].statements == {"asyncpg SELECT": 2, "psycopg SELECT": 2}
    assert counts["pg"].connections == {"asyncpg": 1, "psycopg": 1}
    assert counts["redis"].statements["redis PING"] == 2
    assert counts["redis"].round_trips["redis"] < counts["redis"].statements.total()


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_retention_benchmark_reports_before_and_after(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """`python -m bench.prune --smoke` seeds, prunes and measures on each backend: the due
    executions and the long thread's old checkpoints are gone, the figures reported."""
    if backend == "postgres":
        request.getfixturevalue("pg_admin")  # one clear failure when it is not there
    out = tmp_path / "prune.json"
    _, result = run_bench(["bench.prune", "--smoke", "--backend", backend], out, timeout=110)
    before, after, vacuumed = result["measures"]
    # 2,000 seeded (90% due) and a thread of 200 (90% due): 1,800 + 180 deleted.
    assert (before["executions"], after["executions"]) == (2200, 220)
    assert result["prune"]["executions"] == 1980
    assert after["long_thread_checkpoints"] == 10  # --keep-checkpoints
    assert vacuumed["bytes"] < before["bytes"]
    for measure in result["measures"]:
        assert measure["long_thread_latest_p50_ms"] > 0
    assert result["prune"]["seconds_per_10k_executions"] > 0
    pruned = result["prune"]
    # The dry run before the pass counted exactly what the pass then deleted.
    assert pruned["dry_run_counts"] == [
        pruned["executions"],
        pruned["threads"],
        pruned["checkpoints"],
    ]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(300)
def test_the_drain_benchmark_splits_user_and_system_time(
    pg_admin: PgAdmin, redis_url: str, tmp_path: Path
) -> None:
    """`python -m bench.drain` reads the user and system CPU time of the limit and of a
    worker draining a backlog, per execution."""
    command = ["bench.drain", "--executions", "40", "--redis", redis_url]
    printed, result = run_bench(command, tmp_path / "drain.json", timeout=280)
    assert result["executions"] == 40
    for part in ("limit", "worker"):
        # The steps graph costs milliseconds of CPU per execution: 40 of them are counted
        # in clock ticks of 10 ms, so user time can only be 0 if nothing was measured.
        assert result[part]["user_ms"] > 0
        assert result[part]["system_ms"] >= 0
    total = {p: result[p]["user_ms"] + result[p]["system_ms"] for p in ("limit", "worker")}
    assert result["ratio"] == pytest.approx(total["limit"] / total["worker"], abs=0.002)
    assert "limit / worker" in printed


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(600)
def test_the_instruction_count_benchmark_counts_the_limit_and_a_worker(
    pg_admin: PgAdmin, redis_url: str, tmp_path: Path
) -> None:
    """`python -m bench.instructions` counts, under callgrind, the instructions of the limit
    and of a worker draining a backlog, and of an idle worker."""
    command = ["bench.instructions", "--executions", "20", "--idle-s", "2", "--redis", redis_url]
    _, result = run_bench(command, tmp_path / "instructions.json", timeout=580)
    assert result["executions"] == 20
    # The steps graph costs millions of instructions per execution either way.
    assert result["limit_per_execution"] > 1_000_000
    assert result["worker_per_execution"] > result["limit_per_execution"] / 2
    assert result["worker_idle_per_s"] > 0
    ratio = result["limit_per_execution"] / result["worker_per_execution"]
    assert result["ratio"] == pytest.approx(ratio, abs=0.002)
