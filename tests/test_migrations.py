"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import lg_deploy.core.models  # noqa: F401
from lg_deploy.core.store.migrate import include_name, migrate


def _diff(connection: sa.Connection) -> list[object]:
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_name": include_name}
    )
    return list(compare_metadata(context, SQLModel.metadata))


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    """After `lg-deploy migrate`, autogenerate finds nothing left to change."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert "executions" in tables
    assert "checkpoints" in tables  # the LangGraph saver's own tables
    assert diff == []


async def test_migrate_is_idempotent(database_url: str) -> None:
    """Running the migrations again on an up-to-date database changes nothing."""
    await migrate(database_url)
    await migrate(database_url)
