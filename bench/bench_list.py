"""How the store's reads scale: list and get on a table of a million executions.

Seeds N rows (default 1,000,000) straight into a fresh database with one SQL statement,
then times the queries the API makes, through the store itself:

    python bench/bench_list.py                      # SQLite in a temp folder
    python bench/bench_list.py --postgres postgresql+asyncpg://postgres@127.0.0.1/postgres

A figure, not a test: it reports the median and the worst of several runs of each query.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.states import Status
from lg_deploy.core.store import open_store
from lg_deploy.core.store.migrate import migrate

STATUSES = [s.value for s in Status]

# Ids are UUIDv7-shaped: a millisecond prefix that grows with the row number, so the order
# of ids is the order of creation, as with real executions.
SEED_POSTGRES = """
INSERT INTO executions (execution_id, graph_id, thread_id, input, config, metadata, status,
    has_resume, attempt, handbacks, max_attempts, attempt_errors, created_at, updated_at)
SELECT
    (lpad(to_hex(1700000000000 + n), 12, '0') || '7000' || lpad(to_hex(n), 16, '0'))::uuid,
    'graph-' || (n % 10), 'thread-' || (n % 50000), '{"text": "hi"}', '{}', '{}',
    (ARRAY['COMPLETED','COMPLETED','COMPLETED','FAILED','CANCELLED','QUEUED'])[1 + n % 6],
    false, 1, 0, 1, '[]', now(), now()
FROM generate_series(1, :n) AS n
"""

SEED_SQLITE = """
WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :n)
INSERT INTO executions (execution_id, graph_id, thread_id, input, config, metadata, status,
    has_resume, attempt, handbacks, max_attempts, attempt_errors, created_at, updated_at)
SELECT
    printf('%012x7000%016x', 1700000000000 + n, n),
    'graph-' || (n % 10), 'thread-' || (n % 50000), '{"text": "hi"}', '{}', '{}',
    CASE n % 6 WHEN 3 THEN 'FAILED' WHEN 4 THEN 'CANCELLED' WHEN 5 THEN 'QUEUED'
        ELSE 'COMPLETED' END,
    0, 1, 0, 1, '[]', datetime('now'), datetime('now')
FROM seq
"""


async def seed(url: str, n: int) -> float:
    started = time.perf_counter()
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            sql = SEED_POSTGRES if url.startswith("postgresql") else SEED_SQLITE
            await conn.execute(sa.text(sql), {"n": n})
            if url.startswith("postgresql"):
                await conn.execute(sa.text("ANALYZE executions"))
            else:
                await conn.execute(sa.text("ANALYZE"))
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def timed(query: Callable[[], Awaitable[Any]], runs: int) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        await query()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


async def measure(url: str, n: int, runs: int) -> dict[str, tuple[float, float]]:
    await migrate(url)
    print(f"  seeding {n:,} rows ...", flush=True)
    print(f"  seeded in {await seed(url, n):.1f} s", flush=True)
    store = open_store(url)
    try:
        newest = (await store.list_executions(limit=1)).items[0].execution_id
        middle = (await store.list_executions(limit=1, cursor=_middle_id(n))).items[0]
        queries: dict[str, Callable[[], Awaitable[Any]]] = {
            "get by id": lambda: store.get(middle.execution_id),
            "list newest 50": lambda: store.list_executions(limit=50),
            "list page deep in the table": lambda: store.list_executions(
                limit=50, cursor=middle.execution_id
            ),
            "list status=QUEUED": lambda: store.list_executions(status=Status.QUEUED, limit=50),
            "list status=FAILED, deep page": lambda: store.list_executions(
                status=Status.FAILED, limit=50, cursor=middle.execution_id
            ),
            "list graph_id": lambda: store.list_executions(graph_id="graph-3", limit=50),
            "list thread_id": lambda: store.list_executions(thread_id="thread-42", limit=50),
            "count by status": store.count_by_status,
            "insert one": lambda: store.create(_new()),
        }
        assert newest is not None
        return {name: await timed(q, runs) for name, q in queries.items()}
    finally:
        await store.close()


def _middle_id(n: int) -> uuid.UUID:
    return uuid.UUID(f"{1700000000000 + n // 2:012x}7000{n // 2:016x}")


def _new() -> Any:
    from lg_deploy.core.models import Execution

    execution_id = new_execution_id()
    return Execution(
        execution_id=execution_id, graph_id="graph-1", thread_id=str(execution_id), input={}
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--postgres", help="an admin URL; a scratch database is made and dropped")
    args = parser.parse_args()
    if args.postgres:
        import psycopg

        name = f"lgd_bench_list_{uuid.uuid4().hex[:8]}"
        admin = args.postgres.replace("postgresql+asyncpg://", "postgresql://", 1)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = args.postgres.rsplit("/", 1)[0] + "/" + name
        try:
            report("PostgreSQL", asyncio.run(measure(url, args.rows, args.runs)))
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/bench.db"
        report("SQLite", asyncio.run(measure(url, args.rows, args.runs)))


def report(backend: str, figures: dict[str, tuple[float, float]]) -> None:
    print(f"{backend}: median / worst of the runs, ms")
    for name, (median, worst) in figures.items():
        print(f"  {name:34s} {median:9.2f} {worst:9.2f}")


if __name__ == "__main__":
    main()
