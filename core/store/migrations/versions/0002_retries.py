"""Retries: a retry budget, a not-before time, per-attempt errors, hand-backs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("handbacks", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("max_attempts", sa.Integer(), nullable=False, server_default="1")
        )
        batch.add_column(sa.Column("not_before", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("attempt_errors", JSON, nullable=False, server_default=sa.text("'[]'"))
        )
    # The defaults only filled existing rows; the application always writes these.
    with op.batch_alter_table("executions") as batch:
        batch.alter_column("handbacks", server_default=None)
        batch.alter_column("max_attempts", server_default=None)
        batch.alter_column("attempt_errors", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("attempt_errors")
        batch.drop_column("not_before")
        batch.drop_column("max_attempts")
        batch.drop_column("handbacks")
