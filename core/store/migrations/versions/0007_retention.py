"""Retention: each execution's retention, settled at submit, and when it may be deleted
(``delete_after``, stamped when it finishes or pauses), with a partial index of the rows
the pruner may delete.

Executions that finished before this revision keep ``delete_after`` NULL: they are kept
until deleted by hand (docs/operations.md, "Retention").

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELETABLE = "delete_after IS NOT NULL"


def upgrade() -> None:
    # Nullable columns without a default: a catalog change on PostgreSQL, no table rewrite.
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("retention_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("interrupted_retention_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("delete_after", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_executions_delete_after",
        "executions",
        ["delete_after"],
        sqlite_where=sa.text(DELETABLE),
        postgresql_where=sa.text(DELETABLE),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_delete_after", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("delete_after")
        batch.drop_column("interrupted_retention_s")
        batch.drop_column("retention_s")
