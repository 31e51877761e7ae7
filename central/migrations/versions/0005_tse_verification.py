"""TSE verification at central: what a row needs to be verified on its own, failed sales, gaps, TAR exports

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-12 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_NULLABLE_NOW = (  # a sale whose TSE failed has no signature, counter or algorithm, maybe no number or serial
    ("tse_serial", sa.String(length=128)),
    ("tx_number", sa.BigInteger()),
    ("signature_counter", sa.BigInteger()),
    ("signature", sa.Text()),
    ("algorithm", sa.String(length=64)),
)


def upgrade() -> None:
    with op.batch_alter_table("tse_transactions", schema=None) as batch_op:
        for name, type_ in _NULLABLE_NOW:
            batch_op.alter_column(name, existing_type=type_, nullable=True)
        batch_op.add_column(sa.Column("device_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("start_counter", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("public_key", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("log_time", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("receipt_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("tse_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("gap_before", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("gap_since", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_tse_transactions_serial_counter", ["tse_serial", "signature_counter"], unique=False)
        batch_op.create_index("ix_tse_transactions_serial_start_counter", ["tse_serial", "start_counter"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_tse_transactions_verified"), ["verified"], unique=False)
        batch_op.create_index(batch_op.f("ix_tse_transactions_gap_before"), ["gap_before"], unique=False)

    op.create_table(
        "tse_exports",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tse_serial", sa.String(length=128), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("partial", sa.Boolean(), nullable=False),
        sa.Column("log_messages", sa.Integer(), nullable=False),
        sa.Column("first_counter", sa.BigInteger(), nullable=True),
        sa.Column("last_counter", sa.BigInteger(), nullable=True),
        sa.Column("first_tx", sa.BigInteger(), nullable=True),
        sa.Column("last_tx", sa.BigInteger(), nullable=True),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("uploaded_by", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tse_exports")),
        sa.UniqueConstraint("sha256", name=op.f("uq_tse_exports_sha256")),
    )
    with op.batch_alter_table("tse_exports", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tse_exports_tse_serial"), ["tse_serial"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tse_exports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tse_exports_tse_serial"))
    op.drop_table("tse_exports")

    with op.batch_alter_table("tse_transactions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_tse_transactions_gap_before"))
        batch_op.drop_index(batch_op.f("ix_tse_transactions_verified"))
        batch_op.drop_index("ix_tse_transactions_serial_start_counter")
        batch_op.drop_index("ix_tse_transactions_serial_counter")
        for name in ("gap_since", "gap_before", "tse_error", "receipt_id", "log_time", "public_key", "start_counter",
                     "device_id"):
            batch_op.drop_column(name)
        for name, type_ in _NULLABLE_NOW:  # fails while a failed sale (no signature …) is stored: 0004 cannot hold it
            batch_op.alter_column(name, existing_type=type_, nullable=False)
