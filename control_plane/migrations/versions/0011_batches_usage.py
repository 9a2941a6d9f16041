"""Batches keep their counts once ended, and when they ended, so their lines can be swept.

A batch's ``usage`` and ``credits_used`` are read from its lines' usage records (no column);
its ``request_counts`` are read from its lines while it runs, and from these columns once it
has ended, since its lines are deleted INFERY_BATCH_LINES_RETENTION_DAYS later. Batches that
had already ended get their counts and end time from their lines here.

Revision ID: 0011_batches_usage
Revises: 0010_batches
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_batches_usage"
down_revision: str | None = "0010_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OK = "l.state = 'done' AND l.status_code >= 200 AND l.status_code < 300"


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch:
        batch.add_column(sa.Column("completed_lines", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("failed_lines", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("ended_at", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("lines_swept", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_batches_sweep", "batches", ["lines_swept", "ended_at"], unique=False)
    # Lines that did not complete count as failed, those a cancel or the window stopped included.
    op.execute(
        "UPDATE batches SET"
        " ended_at = COALESCE(completed_at, cancelled_at, expired_at, failed_at),"
        f" completed_lines = (SELECT COUNT(*) FROM batch_lines l WHERE l.batch_id = batches.id AND {_OK}),"
        " failed_lines = (SELECT COUNT(*) FROM batch_lines l WHERE l.batch_id = batches.id"
        f" AND NOT ({_OK}))"
        " WHERE status IN ('completed', 'failed', 'expired', 'cancelled')"
    )


def downgrade() -> None:
    op.drop_index("ix_batches_sweep", table_name="batches")
    with op.batch_alter_table("batches") as batch:
        batch.drop_column("lines_swept")
        batch.drop_column("ended_at")
        batch.drop_column("failed_lines")
        batch.drop_column("completed_lines")
