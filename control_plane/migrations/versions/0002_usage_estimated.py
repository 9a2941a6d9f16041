"""Usage records say when their tokens are the gateway's estimate, and why a provider's usage was refused.

A stream the client abandons or the provider cuts, or an answer whose usage is missing or
invalid, is charged from an estimate (ext_proc/token_estimate.py); the record says so.
Existing rows were all charged from the provider's usage (or not at all): false and empty.

Revision ID: 0002_usage_estimated
Revises: 0001
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_usage_estimated"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("usage_estimated", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("usage_rejected", sa.String(length=256), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("usage_rejected")
        batch.drop_column("usage_estimated")
