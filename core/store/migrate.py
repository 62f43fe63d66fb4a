"""Schema migrations: Alembic for the executions table, the savers' own for checkpoints."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.ext.asyncio import create_async_engine

from lg_deploy.core.errors import BackendUnavailable
from lg_deploy.core.store import check_database_url, ensure_sqlite_dir

SCRIPT_LOCATION = "lg_deploy.core.store:migrations"
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
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
    command.upgrade(alembic_config(connection), "head")


def _current(connection: sa.Connection) -> bool:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    return set(MigrationContext.configure(connection).get_current_heads()) == heads


async def schema_is_current(url: str) -> bool:
    """Whether the executions schema at ``url`` is at the newest migration."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(_current)
    except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
        raise BackendUnavailable("database", str(exc).splitlines()[0][:200]) from exc
    finally:
        await engine.dispose()


async def migrate(url: str) -> None:
    """Bring the executions schema and the checkpoint tables at ``url`` up to date."""
    from lg_deploy.core.checkpoint import setup_checkpointer

    check_database_url(url)
    ensure_sqlite_dir(url)
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade)
    except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as exc:
        raise BackendUnavailable("database", str(exc).splitlines()[0][:200]) from exc
    finally:
        await engine.dispose()
    await setup_checkpointer(url)
