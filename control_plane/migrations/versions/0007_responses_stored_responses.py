"""Stored responses of the Responses API (``store``), per workspace, until they expire.

Revision ID: 0007_responses
Revises: 0006_audio
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_responses"
down_revision: str | None = "0006_audio"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stored_responses",
        sa.Column("workspace_id", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("response", sa.LargeBinary(), nullable=False),
        sa.Column("input_items", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("workspace_id", "id", name=op.f("pk_stored_responses")),
    )
    op.create_index("ix_stored_responses_expires_at", "stored_responses", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_stored_responses_expires_at", table_name="stored_responses")
    op.drop_table("stored_responses")
