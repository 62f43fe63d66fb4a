"""Alembic environment: runs on the connection ``lg_deploy.core.store.migrate`` hands in."""

from alembic import context
from sqlmodel import SQLModel

import lg_deploy.core.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from lg_deploy.core.store.migrate import include_name

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()
