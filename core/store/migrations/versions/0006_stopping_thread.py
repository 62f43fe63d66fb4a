"""An index of the cancelled executions whose worker has not yet let go of them: a claim on
their thread waits until it has (a cancelled graph stops before its thread runs the next).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STOPPING = "status = 'CANCELLED' AND lease_owner IS NOT NULL"


def upgrade() -> None:
    op.create_index(
        "ix_executions_stopping_thread",
        "executions",
        ["thread_id"],
        sqlite_where=sa.text(STOPPING),
        postgresql_where=sa.text(STOPPING),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_stopping_thread", table_name="executions")
