"""``devices.kind`` holds a profile name: up to 64 characters (the profile schema's limit and the record model's,
``sync.records.device_status.MAX_DEVICE_KIND``), not 32 — a device with a longer profile name failed its whole
health batch on PostgreSQL.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 23:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.alter_column("kind", existing_type=sa.String(length=32), type_=sa.String(length=64),
                              existing_nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.alter_column("kind", existing_type=sa.String(length=64), type_=sa.String(length=32),
                              existing_nullable=True)
