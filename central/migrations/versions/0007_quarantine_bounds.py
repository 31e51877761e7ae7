"""Quarantine bounds: payload prefix + SHA-256 + size, source, retention

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 19:45:00.000000

The rows already there get the SHA-256 and size of their payload (computed here, row by row: SQLite has no SHA-256)
and keep their payload whole (``payload_truncated`` false): a migration deletes nothing. They go with the retention
prune (``ingest.quarantine_retention_days``, ``floorgate central quarantine prune``). The index on ``received_at``
serves that prune.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLE = "ingest_quarantine"
_INDEX = "ix_ingest_quarantine_received_at"


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.add_column(sa.Column("payload_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("payload_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("payload_truncated", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("source", sa.String(length=80), nullable=True))
    bind = op.get_bind()
    table = sa.table(_TABLE, sa.column("id", sa.BigInteger()), sa.column("payload", sa.LargeBinary()),
                     sa.column("payload_sha256", sa.String()), sa.column("payload_size", sa.BigInteger()))
    last = 0
    while True:  # a few ids at a time: old rows may hold payloads of megabytes
        ids = list(bind.execute(sa.select(table.c.id).where(table.c.id > last).order_by(table.c.id).limit(500))
                   .scalars())
        if not ids:
            break
        for row_id in ids:
            payload = bytes(bind.execute(sa.select(table.c.payload).where(table.c.id == row_id)).scalar_one() or b"")
            bind.execute(table.update().where(table.c.id == row_id).values(
                payload_sha256=hashlib.sha256(payload).hexdigest(), payload_size=len(payload)))
        last = ids[-1]
    with op.batch_alter_table(_TABLE) as batch:
        batch.alter_column("payload_sha256", existing_type=sa.String(length=64), nullable=False)
        batch.alter_column("payload_size", existing_type=sa.BigInteger(), nullable=False)
        batch.alter_column("payload_truncated", existing_type=sa.Boolean(), server_default=None)
        batch.create_index(_INDEX, ["received_at"])


def downgrade() -> None:
    # rows kept truncated stay truncated: the rest of those payloads was never stored
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_index(_INDEX)
        batch.drop_column("source")
        batch.drop_column("payload_truncated")
        batch.drop_column("payload_size")
        batch.drop_column("payload_sha256")
