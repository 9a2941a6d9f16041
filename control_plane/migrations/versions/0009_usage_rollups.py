"""Hourly and daily usage rollups, backfilled from the stored records.

Revision ID: 0009_usage_rollups
Revises: 0008_files_usage
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# Frozen here (a migration must not import application code that may change later); the same
# buckets as control_plane/resources/usage_rollups.py computes at ingestion. Integer division
# floors only for non-negative times on both databases, and records start after 1970.
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
DIMENSIONS = "workspace_id, key_id, member_id, model_used, endpoint"
COLUMNS = (
    f"period, bucket_ms, {DIMENSIONS}, day, requests, input_tokens, cached_input_tokens, output_tokens,"
    " credits_pico, file_bytes"
)

revision: str = "0009_usage_rollups"
down_revision: str | None = "0008_files_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("period", sa.String(length=4), nullable=False),
        sa.Column("bucket_ms", sa.BigInteger(), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("model_used", sa.String(length=128), nullable=False),
        sa.Column("endpoint", sa.String(length=128), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("credits_pico", sa.BigInteger(), nullable=False),
        sa.Column("file_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "period",
            "bucket_ms",
            "workspace_id",
            "key_id",
            "member_id",
            "model_used",
            "endpoint",
            name=op.f("pk_usage_rollups"),
        ),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_usage_rollups_workspace_bucket", "usage_rollups", ["workspace_id", "period", "bucket_ms"], unique=False
    )
    for period, span in (("hour", HOUR_MS), ("day", DAY_MS)):
        bucket = f"started_at_ms - started_at_ms % {span}"
        op.execute(
            f"INSERT INTO usage_rollups ({COLUMNS})"
            f" SELECT '{period}', {bucket}, {DIMENSIONS}, MIN(day), COUNT(*), SUM(input_tokens),"
            " SUM(cached_input_tokens), SUM(output_tokens), SUM(credits_pico), SUM(file_bytes)"
            f" FROM usage_records GROUP BY {bucket}, {DIMENSIONS}"
        )


def downgrade() -> None:
    op.drop_index("ix_usage_rollups_workspace_bucket", table_name="usage_rollups")
    op.drop_table("usage_rollups")
