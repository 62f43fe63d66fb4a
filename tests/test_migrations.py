"""The Alembic migrations build exactly the schema the models describe."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import lg_deploy.core.models  # noqa: F401
from lg_deploy.core.ids import new_execution_id
from lg_deploy.core.models import Execution
from lg_deploy.core.states import Status
from lg_deploy.core.store import open_store
from lg_deploy.core.store.migrate import include_name, migrate, schema_state
from tests.conftest import PG_ADMIN_URL, PgAdmin


def new_execution() -> Execution:
    execution_id = new_execution_id()
    return Execution(execution_id=execution_id, graph_id="steps", thread_id=str(execution_id))


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
    """Running the migrations again on an up-to-date database keeps its rows and leaves
    the schema current, with nothing left to change."""
    store = open_store(database_url)
    try:
        kept = await store.create(new_execution())
        await migrate(database_url)
        await migrate(database_url)
        assert (await store.get(kept[0].execution_id)).status is Status.QUEUED
    finally:
        await store.close()
    assert await schema_state(database_url) == "current"
    await test_migrated_schema_matches_the_models(database_url)


@pytest.mark.postgres
async def test_concurrent_migrations_take_turns(pg_admin: PgAdmin) -> None:
    """Four migrations of a new database at once (pods starting together) all succeed and
    leave one current schema."""
    name = f"lgd_concurrent_{uuid.uuid4().hex[:8]}"
    pg_admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
        await asyncio.gather(*(migrate(url) for _ in range(4)))
        assert await schema_state(url) == "current"
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_schema_state_tells_behind_from_ahead(sqlite_url: str) -> None:
    """A database never migrated is behind this release; one a newer release migrated (a
    revision this release does not know) is ahead, and this release may still run on it."""
    engine = create_async_engine(sqlite_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("CREATE TABLE alembic_version (version_num TEXT)"))
        assert await schema_state(sqlite_url) == "behind"
        await migrate(sqlite_url)
        async with engine.begin() as conn:
            await conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
        assert await schema_state(sqlite_url) == "ahead"
    finally:
        await engine.dispose()
