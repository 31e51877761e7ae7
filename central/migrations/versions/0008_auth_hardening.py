"""Authentication hardening: token version per user, login throttling per user and address

``users.token_version`` ends a user's access tokens on a password change or when they are disabled;
``api_keys.owner_user_id`` ties a key to the person who made it (disabling them ends it), filled in from
``created_by`` (``user:<name>``) for the keys held; ``login_throttle`` holds the throttle's counters.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 19:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_version", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_user_id", BIG_ID, nullable=True))
        batch_op.create_index(batch_op.f("ix_api_keys_owner_user_id"), ["owner_user_id"], unique=False)
        batch_op.create_foreign_key(batch_op.f("fk_api_keys_owner_user_id_users"), "users", ["owner_user_id"],
                                    ["id"])
    op.execute("UPDATE api_keys SET owner_user_id = "
               "(SELECT users.id FROM users WHERE 'user:' || users.username = api_keys.created_by)")
    op.create_table(
        "login_throttle",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_throttle")),
        sa.UniqueConstraint("kind", "username", "client", name=op.f("uq_login_throttle_kind")),
    )
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_throttle_last_at"), ["last_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("login_throttle", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_throttle_last_at"))
    op.drop_table("login_throttle")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_api_keys_owner_user_id_users"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_api_keys_owner_user_id"))
        batch_op.drop_column("owner_user_id")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("token_version")
