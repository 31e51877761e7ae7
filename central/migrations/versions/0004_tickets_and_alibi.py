"""weighbridge tickets and the alibi mirror

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:28:03.943517
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from central.db.types import ExactDecimal

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alibi_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("alibi_no", sa.BigInteger(), nullable=False),
        sa.Column("record_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("sig", sa.String(length=128), nullable=False),
        sa.Column("weighed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alibi_entries")),
        sa.UniqueConstraint("node_id", "alibi_no", name=op.f("uq_alibi_entries_node_id")),
    )
    with op.batch_alter_table("alibi_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alibi_entries_weighed_at"), ["weighed_at"], unique=False)

    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reference", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("paired_by", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_tickets_reference"), ["reference"], unique=False)

    with op.batch_alter_table("weighings", schema=None) as batch_op:
        batch_op.alter_column("gross", existing_type=ExactDecimal(), nullable=True)  # net + tare only
        batch_op.add_column(sa.Column("tare", ExactDecimal(), nullable=True))
        batch_op.add_column(sa.Column("tare_preset", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("net", ExactDecimal(), nullable=True))
        batch_op.add_column(sa.Column("alibi_no", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("instrument_alibi", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("reference", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("vehicle", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("trigger", sa.String(length=16), nullable=True))
        batch_op.create_index(batch_op.f("ix_weighings_reference"), ["reference"], unique=False)
        batch_op.create_index(batch_op.f("ix_weighings_vehicle"), ["vehicle"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("weighings", schema=None) as batch_op:
        batch_op.alter_column("gross", existing_type=ExactDecimal(), nullable=False)  # fails if a gross is NULL
        batch_op.drop_index(batch_op.f("ix_weighings_vehicle"))
        batch_op.drop_index(batch_op.f("ix_weighings_reference"))
        batch_op.drop_column("trigger")
        batch_op.drop_column("vehicle")
        batch_op.drop_column("reference")
        batch_op.drop_column("instrument_alibi")
        batch_op.drop_column("alibi_no")
        batch_op.drop_column("net")
        batch_op.drop_column("tare_preset")
        batch_op.drop_column("tare")

    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tickets_reference"))
        batch_op.drop_column("paired_by")
        batch_op.drop_column("reference")

    with op.batch_alter_table("alibi_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alibi_entries_weighed_at"))

    op.drop_table("alibi_entries")
