"""node keys and heartbeats, record clocks, quota loss and replay marks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NODE_COLUMNS = [
    sa.Column("public_key", sa.String(length=128), nullable=True),
    sa.Column("key_fingerprint", sa.String(length=32), nullable=True),
    sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("software_version", sa.String(length=32), nullable=True),
    sa.Column("boot_id", sa.String(length=64), nullable=True),
    sa.Column("last_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("heartbeat", sa.JSON(), nullable=True),
    sa.Column("last_hb_bno", sa.BigInteger(), nullable=True),
    sa.Column("clock_skew_s", sa.Float(), nullable=True),
    sa.Column("wall_mono_offset_ns", sa.BigInteger(), nullable=True),
    sa.Column("clock_flag", sa.Text(), nullable=True),
    sa.Column("clock_flag_at", sa.DateTime(timezone=True), nullable=True),
]
_INBOX_COLUMNS = [
    sa.Column("first_seq", sa.BigInteger(), nullable=True),
    sa.Column("device_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("mono_ns", sa.BigInteger(), nullable=True),
    sa.Column("boot_id", sa.String(length=64), nullable=True),
]
_MARK_COLUMNS = [
    sa.Column("lost", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_bno", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("replays_requested", sa.BigInteger(), nullable=False, server_default="0"),
]


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.alter_column("epoch", existing_type=sa.String(length=64), nullable=True)
        batch.alter_column("first_seen", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch.alter_column("last_seen", existing_type=sa.DateTime(timezone=True), nullable=True)
        for col in _NODE_COLUMNS:
            batch.add_column(col)
    with op.batch_alter_table("ingest_inbox") as batch:
        for col in _INBOX_COLUMNS:
            batch.add_column(col)
    with op.batch_alter_table("ingest_marks") as batch:
        for col in _MARK_COLUMNS:
            batch.add_column(col)


def downgrade() -> None:
    with op.batch_alter_table("ingest_marks") as batch:
        for col in reversed(_MARK_COLUMNS):
            batch.drop_column(col.name)
    with op.batch_alter_table("ingest_inbox") as batch:
        for col in reversed(_INBOX_COLUMNS):
            batch.drop_column(col.name)
    op.execute("DELETE FROM nodes WHERE epoch IS NULL OR first_seen IS NULL OR last_seen IS NULL")
    with op.batch_alter_table("nodes") as batch:
        for col in reversed(_NODE_COLUMNS):
            batch.drop_column(col.name)
        batch.alter_column("last_seen", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("first_seen", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch.alter_column("epoch", existing_type=sa.String(length=64), nullable=False)
