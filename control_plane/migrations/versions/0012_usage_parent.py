"""Usage records name the request an emulated n's extra choice served (parent_request_id).

Revision ID: 0012_usage_parent
Revises: 0011_batches_usage
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_usage_parent"
down_revision: str | None = "0011_batches_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("parent_request_id", sa.String(length=128), nullable=False, server_default=""))
        # GET /admin/v1/usage/requests/{id}/choices lists a request's extra choices by it.
        batch.create_index("ix_usage_records_parent_request_id", ["parent_request_id"])


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_index("ix_usage_records_parent_request_id")
        batch.drop_column("parent_request_id")
