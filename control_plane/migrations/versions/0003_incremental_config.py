"""Incremental configuration: `updated_revision` on every served table, and tombstones.

The publisher reads only the rows changed since the revision it last published
(issue 18): each served row carries the revision that last wrote it (indexed), and a
deleted row leaves a tombstone with the revision that deleted it. Existing rows get the
current revision, so a publisher that starts from revision 0 still reads them all.

Revision ID: 0003
Revises: 0002_usage_estimated
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002_usage_estimated"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("providers", "models", "routes", "workspaces", "api_keys")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("updated_revision", sa.BigInteger(), nullable=False, server_default="0"))
        with op.batch_alter_table(table) as batch:
            batch.alter_column("updated_revision", server_default=None)
        op.execute(
            f"UPDATE {table} SET updated_revision = (SELECT revision FROM config_revision WHERE id = 1)"
        )
        op.create_index(op.f(f"ix_{table}_updated_revision"), table, ["updated_revision"])
    op.create_table(
        "config_tombstones",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key", name=op.f("pk_config_tombstones")),
    )
    op.create_index(op.f("ix_config_tombstones_revision"), "config_tombstones", ["revision"])


def downgrade() -> None:
    op.drop_index(op.f("ix_config_tombstones_revision"), table_name="config_tombstones")
    op.drop_table("config_tombstones")
    for table in _TABLES:
        op.drop_index(op.f(f"ix_{table}_updated_revision"), table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("updated_revision")
