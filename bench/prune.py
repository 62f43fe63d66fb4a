"""``python -m bench.prune``: what retention costs and saves (BENCHMARKS.md, "Retention").

A fresh database (PostgreSQL or SQLite) is seeded with bulk SQL, never through the API:
``--executions`` finished executions, each on a thread of its own with
``--checkpoints-per-execution`` checkpoints (and, on PostgreSQL, the blobs they reference),
of which ``--kept-percent`` are not due yet; and one long thread of
``--thread-executions`` executions with four checkpoints each, of which the oldest 90% are
due. The checkpoints are copies of one the LangGraph saver wrote itself, so the saver
reads them as its own.

Then, before and after one prune pass (``--keep-checkpoints`` on the live thread): the size
on disk, the bytes per execution, and the time to read the long thread's state (what a
resume reads) and its whole history; and how long the pass took per 10,000 executions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench.seed import finished_execution, insert_rows
from lg_deploy.core.checkpoint import open_checkpointer
from lg_deploy.core.models import ExecutionTable, utcnow
from lg_deploy.core.states import Status
from lg_deploy.core.store import open_store
from lg_deploy.core.store.migrate import migrate
from lg_deploy.run.cli import PRUNE_TIMEOUT_S
from tests.conftest import PG_ADMIN_URL

LONG_THREAD = "long"
CHECKPOINTS_PER_LONG_EXECUTION = 4
# Seeded ids are shaped like UUIDv7 ids from 2020: they sort before every real one.
_ID_BASE_MS = 1_600_000_000_000
TABLES = ("executions", "checkpoints", "checkpoint_blobs", "checkpoint_writes")


def _numbers(dialect: str, first: int, last: int) -> Any:
    """A FROM clause of one column ``n`` from ``first`` to ``last``."""
    if dialect == "postgresql":
        return sa.func.generate_series(first, last).table_valued("n").render_derived()
    n = sa.select(sa.literal(first).label("n")).cte("numbers", recursive=True)
    return n.union_all(sa.select(n.c.n + 1).where(n.c.n < last))


def _hex_id(dialect: str, n: Any, *, prefix: int) -> Any:
    """A 32-hex-digit id from ``n``, in ``n``'s order."""
    if dialect == "postgresql":
        return sa.func.concat(
            sa.func.lpad(sa.func.to_hex(n + _ID_BASE_MS), 12, "0"),
            f"7{prefix:03x}8",
            sa.func.lpad(sa.func.to_hex(n), 15, "0"),
        )
    return sa.func.printf(f"%012x7{prefix:03x}8%015x", n + _ID_BASE_MS, n)


def _insert_executions(
    dialect: str, first: int, last: int, *, thread: str | None, due_below: int
) -> sa.Insert:
    """Finished executions ``first``..``last``: due (delete_after a day ago) below
    ``due_below``, kept (a month on) from there."""
    now = utcnow()
    template = finished_execution(retention_s=3600.0)
    table = ExecutionTable.__table__  # type: ignore[attr-defined]
    numbers = _numbers(dialect, first, last)
    n = numbers.c.n
    varied: dict[str, Any] = {
        "execution_id": sa.cast(_hex_id(dialect, n, prefix=0), table.c.execution_id.type),
        "thread_id": sa.literal(thread)
        if thread
        else sa.literal("seed-").concat(sa.cast(n, sa.String())),
        "status": sa.case(
            (n % 10 == 0, Status.FAILED.value),
            (n % 10 == 1, Status.CANCELLED.value),
            else_=Status.COMPLETED.value,
        ),
        "delete_after": sa.case(
            (n < due_below, sa.literal(now - timedelta(days=1), table.c.delete_after.type)),
            else_=sa.literal(now + timedelta(days=30), table.c.delete_after.type),
        ),
    }
    return insert_rows(template, varied, numbers)


def _copy_checkpoints(dialect: str, first: int, last: int, per: int, thread: str | None) -> str:
    """SQL copying the long thread's newest checkpoint (and on PostgreSQL its blobs):
    ``per`` older ones for each number, onto its own ``seed-<n>`` thread or ``thread``."""
    target = f"'{thread}'" if thread else "'seed-' || n"
    if dialect == "postgresql":
        numbers = f"generate_series({first}, {last}) AS n, generate_series(1, {per}) AS k"
        new_id = "'0' || lpad(to_hex(n), 20, '0') || lpad(to_hex(k), 15, '0')"
    else:
        numbers = (
            f"(WITH RECURSIVE s(n) AS (SELECT {first} UNION ALL SELECT n + 1 FROM s "
            f"WHERE n < {last}) SELECT n FROM s), "
            f"(WITH RECURSIVE r(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM r WHERE k < {per}) "
            "SELECT k FROM r)"
        )
        new_id = "printf('0%020x%015x', n, k)"
    return (
        "INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
        "parent_checkpoint_id, type, checkpoint, metadata) "
        f"SELECT {target}, '', {new_id}, NULL, t.type, t.checkpoint, t.metadata "
        f"FROM {numbers}, (SELECT * FROM checkpoints WHERE thread_id = '{LONG_THREAD}' "
        "ORDER BY checkpoint_id DESC LIMIT 1) AS t"
    )


def _copy_blobs(first: int, last: int) -> str:
    return (
        "INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob) "
        "SELECT 'seed-' || n, b.checkpoint_ns, b.channel, b.version, b.type, b.blob "
        f"FROM generate_series({first}, {last}) AS n, "
        f"(SELECT * FROM checkpoint_blobs WHERE thread_id = '{LONG_THREAD}') AS b"
    )


async def _template_checkpoint(url: str) -> None:
    """One checkpoint of the long thread, written by the LangGraph saver itself."""
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"text": "HI!", "steps": ["upper", "exclaim"] * 8}
    checkpoint["channel_versions"] = {"text": "1", "steps": "1"}
    async with open_checkpointer(url, pool_size=1) as saver:
        await saver.aput(
            {"configurable": {"thread_id": LONG_THREAD, "checkpoint_ns": ""}},
            checkpoint,
            {"source": "loop", "step": 1, "parents": {}},
            {"text": "1", "steps": "1"},
        )


async def seed(url: str, args: argparse.Namespace) -> None:
    await _template_checkpoint(url)
    engine = create_async_engine(url)
    dialect = engine.dialect.name
    due_below = 1 + args.executions * (100 - args.kept_percent) // 100
    chunk = 100_000  # rows per INSERT: bounded transactions, bounded memory on SQLite
    try:
        for first in range(1, args.executions + 1, chunk):
            last = min(first + chunk - 1, args.executions)
            async with engine.begin() as conn:
                await conn.execute(
                    _insert_executions(dialect, first, last, thread=None, due_below=due_below)
                )
                if args.checkpoints_per_execution:
                    per = args.checkpoints_per_execution
                    await conn.execute(sa.text(_copy_checkpoints(dialect, first, last, per, None)))
                    if dialect == "postgresql":
                        await conn.execute(sa.text(_copy_blobs(first, last)))
            print(f"bench.prune: seeded {last:,} executions", file=sys.stderr, flush=True)
        # The long thread: numbered after the others, the oldest 90% due.
        first, last = args.executions + 1, args.executions + args.thread_executions
        async with engine.begin() as conn:
            await conn.execute(
                _insert_executions(
                    dialect,
                    first,
                    last,
                    thread=LONG_THREAD,
                    due_below=first + args.thread_executions * 9 // 10,
                )
            )
            per = CHECKPOINTS_PER_LONG_EXECUTION
            await conn.execute(sa.text(_copy_checkpoints(dialect, first, last, per, LONG_THREAD)))
        await _settle(engine)
    finally:
        await engine.dispose()


async def _settle(engine: AsyncEngine, *, full: bool = False) -> None:
    """VACUUM (ANALYZE) as a store that lives long is; ``full`` rewrites the files."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        if engine.dialect.name == "postgresql":
            verb = "VACUUM FULL ANALYZE" if full else "VACUUM ANALYZE"
            await conn.execute(sa.text(f"{verb} {', '.join(TABLES)}"))
        elif full:
            await conn.execute(sa.text("VACUUM"))


async def measure(url: str, label: str) -> dict[str, Any]:
    """Size on disk, bytes per execution, and the long thread's read times."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            executions = (await conn.execute(sa.text("SELECT count(*) FROM executions"))).scalar()
            checkpoints = (await conn.execute(sa.text("SELECT count(*) FROM checkpoints"))).scalar()
            sizes: dict[str, int]
            if engine.dialect.name == "postgresql":
                sizes = {
                    table: (
                        await conn.execute(sa.text(f"SELECT pg_total_relation_size('{table}')"))
                    ).scalar()
                    or 0
                    for table in TABLES
                }
                total = sum(sizes.values())
                executions_bytes = sizes["executions"]
            else:
                pages = (await conn.execute(sa.text("PRAGMA page_count"))).scalar() or 0
                free = (await conn.execute(sa.text("PRAGMA freelist_count"))).scalar() or 0
                size = (await conn.execute(sa.text("PRAGMA page_size"))).scalar() or 0
                sizes = {"file": pages * size, "free": free * size}
                total = pages * size
                executions_bytes = None
    finally:
        await engine.dispose()
    latest, history = [], []
    async with open_checkpointer(url, pool_size=1) as saver:
        config: Any = {"configurable": {"thread_id": LONG_THREAD}}
        for _ in range(30):
            started = time.perf_counter()
            await saver.aget_tuple(config)
            latest.append(time.perf_counter() - started)
        for _ in range(3):
            started = time.perf_counter()
            listed = [c async for c in saver.alist(config)]
            history.append(time.perf_counter() - started)
    return {
        "when": label,
        "executions": executions,
        "checkpoints": checkpoints,
        "bytes": total,
        "bytes_by_table": sizes,
        "bytes_per_execution": round(total / executions) if executions else None,
        "executions_table_bytes_per_execution": (
            round(executions_bytes / executions) if executions and executions_bytes else None
        ),
        "long_thread_checkpoints": len(listed),
        "long_thread_latest_p50_ms": round(statistics.median(latest) * 1000, 2),
        "long_thread_history_ms": round(statistics.median(history) * 1000, 1),
    }


async def prune(url: str, args: argparse.Namespace) -> dict[str, Any]:
    # As lg-deploy prune opens it: a dry run counts the whole backlog in one statement.
    store = open_store(url, pool_size=1, statement_timeout_s=PRUNE_TIMEOUT_S)
    try:
        started = time.perf_counter()
        preview = await store.prune(
            batch_size=args.batch_size, keep_checkpoints=args.keep_checkpoints, dry_run=True
        )
        dry_s = time.perf_counter() - started
        started = time.perf_counter()
        report = await store.prune(
            batch_size=args.batch_size, keep_checkpoints=args.keep_checkpoints
        )
        took = time.perf_counter() - started
    finally:
        await store.close()
    per_10k = took / report.executions * 10_000 if report.executions else None
    return {
        "seconds": round(took, 2),
        "executions": report.executions,
        "threads": report.threads,
        "checkpoints": report.checkpoints,
        "seconds_per_10k_executions": round(per_10k, 3) if per_10k else None,
        "dry_run_seconds": round(dry_s, 2),
        "dry_run_counts": [preview.executions, preview.threads, preview.checkpoints],
        "batch_size": args.batch_size,
        "keep_checkpoints": args.keep_checkpoints,
    }


def _database(args: argparse.Namespace, folder: Path) -> tuple[str, Any]:
    """A fresh database's URL, and how to drop it."""
    if args.backend == "sqlite":
        return f"sqlite+aiosqlite:///{folder}/prune.db", lambda: None
    import psycopg

    admin = args.postgres.replace("postgresql+asyncpg://", "postgresql://", 1)
    name = f"lgd_bench_prune_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return args.postgres.rsplit("/", 1)[0] + "/" + name, drop


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.prune", description=__doc__)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--postgres", default=PG_ADMIN_URL, help="a role that may create databases")
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--checkpoints-per-execution", type=int, default=2)
    parser.add_argument("--kept-percent", type=int, default=10, help="not due yet")
    parser.add_argument("--thread-executions", type=int, default=10_000)
    parser.add_argument("--keep-checkpoints", type=int, default=10, help="on the live thread")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--json", type=Path, default=Path(".lg-deploy/bench-prune.json"))
    return parser


def _table(result: dict[str, Any]) -> str:
    before, after, vacuumed = result["measures"]
    pass_ = result["prune"]
    mb = 1024 * 1024
    lines = [
        f"retention on {result['backend']}: {before['executions']:,} executions and "
        f"{before['checkpoints']:,} checkpoints before",
        "",
        f"{'':<38}{'before':>14}{'after prune':>14}{'after vacuum':>14}",
    ]
    rows = [
        ("executions", "executions", "{:,}"),
        ("checkpoints", "checkpoints", "{:,}"),
        ("size on disk (MB)", "bytes", None),
        ("bytes per execution (all tables)", "bytes_per_execution", "{}"),
        ("long thread: checkpoints", "long_thread_checkpoints", "{:,}"),
        ("long thread: read state p50 (ms)", "long_thread_latest_p50_ms", "{}"),
        ("long thread: read history (ms)", "long_thread_history_ms", "{}"),
    ]
    for label, key, shape in rows:
        cells = [
            f"{m[key] / mb:.1f}" if shape is None else shape.format(m[key])
            for m in (before, after, vacuumed)
        ]
        lines.append(f"{label:<38}" + "".join(f"{c:>14}" for c in cells))
    lines += [
        "",
        f"prune pass: {pass_['seconds']} s for {pass_['executions']:,} executions and "
        f"{pass_['checkpoints']:,} checkpoints ({pass_['threads']:,} threads emptied): "
        f"{pass_['seconds_per_10k_executions']} s per 10,000 executions, batches of "
        f"{pass_['batch_size']}, newest {pass_['keep_checkpoints']} checkpoints kept",
        f"dry run before it: {pass_['dry_run_seconds']} s, counted "
        + ", ".join(f"{n:,}" for n in pass_["dry_run_counts"]),
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="lg-deploy-bench-prune-"))
    url, drop = _database(args, folder)
    try:
        await migrate(url)
        started = time.perf_counter()
        await seed(url, args)
        seeded_s = time.perf_counter() - started
        before = await measure(url, "before")
        pruned = await prune(url, args)
        after = await measure(url, "after prune")
        engine = create_async_engine(url)
        try:
            await _settle(engine, full=True)
        finally:
            await engine.dispose()
        vacuumed = await measure(url, "after vacuum full")
    finally:
        drop()
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "backend": args.backend,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "seed_seconds": round(seeded_s, 1),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "prune": pruned,
        "measures": [before, after, vacuumed],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.smoke:
        args.executions, args.thread_executions = 2_000, 200
    result = asyncio.run(run(args))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(_table(result))
    print(f"\n(written to {args.json})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
