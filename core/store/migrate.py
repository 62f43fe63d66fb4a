"""Schema migrations: Alembic for the executions table, the savers' own for checkpoints."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from lg_deploy.core.database_errors import translated
from lg_deploy.core.store import check_database_url, ensure_sqlite_dir

SCRIPT_LOCATION = "lg_deploy.core.store:migrations"
SchemaState = Literal["current", "behind", "ahead"]
# Several processes may migrate at once (pods starting together); one waits for the other.
_PG_LOCK_KEY = 0x6C67_6465_706C_6F79 & 0x7FFF_FFFF_FFFF_FFFF


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Only our tables: the LangGraph savers manage their own."""
    from sqlmodel import SQLModel

    return type_ != "table" or name in SQLModel.metadata.tables


def alembic_config(connection: Any | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", SCRIPT_LOCATION)
    cfg.attributes["connection"] = connection
    return cfg


def _upgrade(connection: sa.Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


def _state(connection: sa.Connection) -> SchemaState:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    at = set(MigrationContext.configure(connection).get_current_heads())
    if at == set(scripts.get_heads()):
        return "current"
    known = {script.revision for script in scripts.walk_revisions()}
    # A revision this release does not know was written by a newer release: the schema is
    # ahead (migrations add before they take away, so this release still runs on it).
    return "ahead" if at and not at <= known else "behind"


async def schema_state(url: str) -> SchemaState:
    """Whether the executions schema at ``url`` is this release's, behind it (run
    ``lg-deploy migrate``), or ahead of it (a newer release migrated it: a rolling upgrade
    or a rollback in progress)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_state)
    except (sa.exc.DBAPIError, OSError) as exc:
        raise translated(exc) or exc from exc
    finally:
        await engine.dispose()


async def _take_turn(conn: AsyncConnection) -> None:
    """Hold the migration lock on ``conn`` (autocommit). Tried, not waited for: a session
    blocked in pg_advisory_lock keeps a snapshot, and the checkpointer's CREATE INDEX
    CONCURRENTLY in the session holding the lock would wait for it for ever."""
    try_lock = sa.text("SELECT pg_try_advisory_lock(:k)")
    while not (await conn.execute(try_lock, {"k": _PG_LOCK_KEY})).scalar():
        await asyncio.sleep(0.2)


async def migrate(url: str) -> None:
    """Bring the executions schema and the checkpoint tables at ``url`` up to date. On
    PostgreSQL the whole of it runs under an advisory lock: pods that migrate at once
    (init containers, a hook job and a manual run) take turns."""
    from lg_deploy.core.checkpoint import setup_checkpointer

    check_database_url(url)
    ensure_sqlite_dir(url)
    engine = create_async_engine(url)
    try:
        async with engine.connect() as lock:
            postgres = lock.dialect.name == "postgresql"
            if postgres:
                await _take_turn(await lock.execution_options(isolation_level="AUTOCOMMIT"))
            try:
                async with engine.begin() as conn:
                    await conn.run_sync(_upgrade)
                await setup_checkpointer(url)
            finally:
                if postgres:
                    await lock.execute(
                        sa.text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY}
                    )
    except (sa.exc.DBAPIError, OSError) as exc:
        raise translated(exc) or exc from exc
    finally:
        await engine.dispose()
