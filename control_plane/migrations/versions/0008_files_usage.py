"""Usage records carry the bytes of a file uploaded or deleted (the files service records both), and
an upload keeps its Idempotency-Key (hashed, unique per workspace) and fingerprint for retries.

Revision ID: 0008_files_usage
Revises: 0007_responses
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_files_usage"
down_revision: str | None = "0007_responses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("file_bytes", sa.BigInteger(), nullable=False, server_default="0"))
    with op.batch_alter_table("stored_files") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
        batch.create_index("ix_stored_files_idempotency", ["workspace_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("stored_files") as batch:
        batch.drop_index("ix_stored_files_idempotency")
        batch.drop_column("fingerprint")
        batch.drop_column("idempotency_key")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("file_bytes")
