"""The executions table.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "executions",
        sa.Column("execution_id", sa.Uuid(), nullable=False),
        sa.Column("graph_id", sa.String(200), nullable=False),
        sa.Column("thread_id", sa.String(200), nullable=False),
        sa.Column("input", JSON, nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("output", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("error_traceback", sa.Text(), nullable=True),
        sa.Column("interrupts", JSON, nullable=True),
        sa.Column("resume", JSON, nullable=True),
        sa.Column("has_resume", sa.Boolean(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("execution_id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_executions_status_id", "executions", ["status", "execution_id"])
    op.create_index("ix_executions_graph_id_id", "executions", ["graph_id", "execution_id"])
    op.create_index("ix_executions_thread_id_id", "executions", ["thread_id", "execution_id"])
    op.create_index("ix_executions_status_updated_at", "executions", ["status", "updated_at"])
    op.create_index(
        "ux_executions_running_thread",
        "executions",
        ["thread_id"],
        unique=True,
        sqlite_where=sa.text("status = 'RUNNING'"),
        postgresql_where=sa.text("status = 'RUNNING'"),
    )


def downgrade() -> None:
    op.drop_table("executions")
