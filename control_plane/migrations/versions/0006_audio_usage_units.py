"""Usage records carry the audio endpoints' units: characters spoken, milliseconds of audio heard.

Revision ID: 0006_audio
Revises: 0005_files
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_audio"
down_revision: str | None = "0005_files"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("characters", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("audio_ms", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("audio_ms")
        batch.drop_column("characters")
