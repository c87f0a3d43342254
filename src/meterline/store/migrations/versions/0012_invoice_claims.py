"""Invoice-run claims: one row per customer-period of a split invoice run.

Revision ID: 0012
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "invoice_claims",
        sa.Column("period_label", sa.String(7), primary_key=True),
        sa.Column("customer_id", sa.String(256), primary_key=True),
        sa.Column("state", sa.String(8), nullable=False),
        sa.Column("number", sa.String(32)),
        sa.Column("done_at", sa.BigInteger),
    )


def downgrade() -> None:
    op.drop_table("invoice_claims")
