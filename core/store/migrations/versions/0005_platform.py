"""The LangGraph Platform API: assistants and their versions, threads, and the platform's
fields of a run (its assistant, and the options it was created with) on executions.

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def _assistant_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("graph_id", sa.String(200), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("context", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("assistant_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("platform", JSON, nullable=True))
    op.create_table(
        "assistants",
        sa.Column("assistant_id", sa.Uuid(), nullable=False),
        *_assistant_columns(),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("assistant_id"),
    )
    op.create_table(
        "assistant_versions",
        sa.Column("assistant_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        *_assistant_columns(),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("assistant_id", "version"),
    )
    op.create_table(
        "threads",
        sa.Column("thread_id", sa.String(200), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state_values", JSON, nullable=True),
        sa.Column("interrupts", JSON, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("state_updated_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("thread_id"),
    )
    op.create_index("ix_threads_created_at", "threads", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_threads_created_at", table_name="threads")
    op.drop_table("threads")
    op.drop_table("assistant_versions")
    op.drop_table("assistants")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("platform")
        batch.drop_column("assistant_id")
