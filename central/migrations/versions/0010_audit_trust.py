"""Records an auditor can trust (issue 16).

- ``node_keys``: every signing key a node ever had, with the fleet CA's key-binding statement and its validity
  interval; the key each node holds now is copied in, without a binding (``verify-alibi`` names it
  ``untrusted_key`` until ``node add --reissue`` binds it with the CA).
- ``nodes.heads*``: the newest heads (alibi, TSEs) the node signed in a heartbeat.
- ``tse_registry``, ``tse_heads``: the pinned TSEs and their signed heads; ``tse_exports.stated_range``.
- ``checkpoints``: external checkpoints of the chain heads.
- weights exactly as delivered: ``weighings`` and ``tickets`` ``gross`` / ``tare`` / ``net`` become text holding the
  instrument's digits (``ExactText``); ``weighings.decimals`` goes — the rows held are rewritten with the decimals
  it recorded (the best that can be recovered: tare and net had been rendered with the gross's decimals before).
- ``tickets.cancelled_by`` / ``cancelled_at``.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-08 01:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def _to_text_pg(table: str, column: str, scale_sql: str) -> None:
    op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR(40) USING "
               f"(CASE WHEN {column} IS NULL THEN NULL ELSE ({scale_sql})::text END)")


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "node_keys",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("binding", sa.Text(), nullable=True),
        sa.Column("valid_from", TS, nullable=False),
        sa.Column("valid_until", TS, nullable=True),
        sa.Column("end_reason", sa.String(length=16), nullable=True),
        sa.Column("end_statement", sa.Text(), nullable=True),
        sa.Column("registered_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_keys")),
    )
    with op.batch_alter_table("node_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_node_keys_node_id"), ["node_id"], unique=False)
    op.execute("INSERT INTO node_keys (node_id, public_key, fingerprint, binding, valid_from, registered_by, "
               "created_at) SELECT node_id, public_key, COALESCE(key_fingerprint, ''), NULL, "
               "COALESCE(enrolled_at, CURRENT_TIMESTAMP), 'migration 0010', CURRENT_TIMESTAMP FROM nodes "
               "WHERE public_key IS NOT NULL")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("heads", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("heads_at", TS, nullable=True))
        batch_op.add_column(sa.Column("heads_body", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("heads_sig", sa.String(length=128), nullable=True))
    op.create_table(
        "tse_registry",
        sa.Column("tse_serial", sa.String(length=128), nullable=False),
        sa.Column("public_key", sa.String(length=200), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=True),
        sa.Column("algorithm", sa.String(length=64), nullable=True),
        sa.Column("time_format", sa.String(length=32), nullable=True),
        sa.Column("node_id", sa.String(length=64), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("confirmed_at", TS, nullable=True),
        sa.Column("confirmed_by", sa.String(length=80), nullable=True),
        sa.Column("statement", sa.Text(), nullable=True),
        sa.Column("sig", sa.Text(), nullable=True),
        sa.Column("kid", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("tse_serial", name=op.f("pk_tse_registry")),
    )
    op.create_table(
        "tse_heads",
        sa.Column("tse_serial", sa.String(length=128), nullable=False),
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("tx_number", sa.BigInteger(), nullable=False),
        sa.Column("signature_counter", sa.BigInteger(), nullable=False),
        sa.Column("reported_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("tse_serial", name=op.f("pk_tse_heads")),
    )
    op.create_table(
        "checkpoints",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("made_at", TS, nullable=False),
        sa.Column("statement", sa.Text(), nullable=False),
        sa.Column("sig", sa.Text(), nullable=False),
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("delivered", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_checkpoints")),
    )
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_checkpoints_made_at"), ["made_at"], unique=False)
    with op.batch_alter_table("tse_exports", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stated_range", sa.JSON(), nullable=True))
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cancelled_by", sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column("cancelled_at", TS, nullable=True))

    # weights as delivered
    if bind.dialect.name == "postgresql":
        for column in ("gross", "tare", "net"):
            _to_text_pg("weighings", column, f"round({column}, decimals)")
            _to_text_pg("tickets", column, f"trim_scale({column})")
    # SQLite held them as text already (ExactDecimal's SQLite form): the strings stay as they are
    with op.batch_alter_table("weighings", schema=None) as batch_op:
        batch_op.drop_column("decimals")


def downgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("weighings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("decimals", sa.Integer(), nullable=False, server_default="0"))
    if bind.dialect.name == "postgresql":
        op.execute("UPDATE weighings SET decimals = COALESCE(length(split_part(COALESCE(gross, net), '.', 2)), 0)")
        for table in ("weighings", "tickets"):
            for column in ("gross", "tare", "net"):
                op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE NUMERIC(18, 6) USING {column}::numeric")
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_column("cancelled_at")
        batch_op.drop_column("cancelled_by")
    with op.batch_alter_table("tse_exports", schema=None) as batch_op:
        batch_op.drop_column("stated_range")
    with op.batch_alter_table("checkpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_checkpoints_made_at"))
    op.drop_table("checkpoints")
    op.drop_table("tse_heads")
    op.drop_table("tse_registry")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("heads_sig")
        batch_op.drop_column("heads_body")
        batch_op.drop_column("heads_at")
        batch_op.drop_column("heads")
    with op.batch_alter_table("node_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_node_keys_node_id"))
    op.drop_table("node_keys")
