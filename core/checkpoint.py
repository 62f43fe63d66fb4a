"""LangGraph checkpointers, in the same database as the executions.

PostgreSQL uses langgraph-checkpoint-postgres (psycopg), SQLite langgraph-checkpoint-sqlite
(aiosqlite); the store's SQLAlchemy URL is translated for them here.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from langgraph.checkpoint.base import BaseCheckpointSaver

from lg_deploy.core.store import check_database_url, ensure_sqlite_dir

# The checkpoint metadata key that names the execution which wrote the checkpoint: a later
# attempt continues only from its own execution's checkpoints (worker/resume.py), and a
# rollback finds what a run wrote (core/platform/checkpoints.py).
EXECUTION_ID_KEY = "lg_deploy_execution_id"


def psycopg_conninfo(url: str) -> str:
    """``postgresql+asyncpg://...?ssl=require`` -> ``postgresql://...?sslmode=require``."""
    parts = urlsplit(url)
    query = [("sslmode" if k == "ssl" else k, v) for k, v in parse_qsl(parts.query)]
    return urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(query), ""))


def sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1] or ":memory:"


@contextlib.asynccontextmanager
async def open_checkpointer(url: str, *, pool_size: int = 10) -> AsyncIterator[BaseCheckpointSaver]:
    """A checkpointer for the store database at ``url``, closed on exit."""
    check_database_url(url)
    if url.startswith("sqlite"):
        import aiosqlite
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        ensure_sqlite_dir(url)
        async with aiosqlite.connect(sqlite_path(url)) as conn:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA busy_timeout=10000")
            saver = AsyncSqliteSaver(conn)
            await saver.setup()
            yield saver
        return

    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool = AsyncConnectionPool(
        psycopg_conninfo(url),
        min_size=1,
        max_size=pool_size,
        open=False,
        kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
    )
    await pool.open()
    try:
        yield AsyncPostgresSaver(pool)  # type: ignore[arg-type]
    finally:
        await pool.close()


async def setup_checkpointer(url: str) -> None:
    """Create or upgrade the checkpointer's own tables (idempotent)."""
    async with open_checkpointer(url, pool_size=1) as saver:
        await saver.setup()  # type: ignore[attr-defined]
