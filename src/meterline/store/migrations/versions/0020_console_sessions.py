"""Console sessions in the store, so every `serve --workers N` process knows them.

Revision ID: 0020
Revises: 0016

Operational state, not a fact (no seq, rows deleted at logout and expiry): a
session opened by one server process must be found by the others, and logging
out in one must end it in all.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("seen_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("console_sessions")
