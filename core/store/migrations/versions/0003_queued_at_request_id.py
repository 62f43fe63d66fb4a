"""When an execution became runnable (queue wait, the oldest runnable one's age), the
request id of the submission that created it, its durability, and an index of each
thread's queued executions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("request_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("durability", sa.String(8), nullable=True))
    # Existing rows: a QUEUED row has not moved since it was queued; a retry waits until
    # its not_before. Other statuses keep the value for the record only.
    op.execute("UPDATE executions SET queued_at = COALESCE(not_before, updated_at)")
    with op.batch_alter_table("executions") as batch:
        batch.alter_column("queued_at", nullable=False)
    op.drop_index("ix_executions_status_updated_at", table_name="executions")
    op.create_index("ix_executions_status_queued_at", "executions", ["status", "queued_at"])
    op.create_index(
        "ix_executions_queued_thread",
        "executions",
        ["thread_id", "execution_id"],
        sqlite_where=sa.text("status = 'QUEUED'"),
        postgresql_where=sa.text("status = 'QUEUED'"),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_queued_thread", table_name="executions")
    op.drop_index("ix_executions_status_queued_at", table_name="executions")
    op.create_index("ix_executions_status_updated_at", "executions", ["status", "updated_at"])
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("durability")
        batch.drop_column("request_id")
        batch.drop_column("queued_at")
