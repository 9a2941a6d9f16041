"""Files uploaded through /v1/files: their metadata (the bytes are in the files storage).

Revision ID: 0005_files
Revises: 0004
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_files"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_files",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=1024), nullable=False),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("storage_key", sa.String(length=256), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stored_files")),
    )
    op.create_index("ix_stored_files_workspace_id", "stored_files", ["workspace_id", "id"])
    op.create_index("ix_stored_files_expires_at", "stored_files", ["expires_at"])
    op.create_index("ix_stored_files_status_created", "stored_files", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_stored_files_status_created", table_name="stored_files")
    op.drop_index("ix_stored_files_expires_at", table_name="stored_files")
    op.drop_index("ix_stored_files_workspace_id", table_name="stored_files")
    op.drop_table("stored_files")
