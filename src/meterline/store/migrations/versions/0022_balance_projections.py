"""The balance projection: each customer's open-period amount due, with the
rating basis it was computed at.

Revision ID: 0022
Revises: 0021

Operational state derived from facts (no seq, no Merkle leaf): rows are replaced
as the refresher re-rates customers whose usage, versions or catalog changed. A
balance uses a row only when its basis equals the basis as known now, so the
row can be stale or missing but never wrong for the answer it gives.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "balance_projections",
        sa.Column("customer_id", sa.String(256), primary_key=True),
        sa.Column("period_label", sa.String(32), primary_key=True),
        sa.Column("basis", sa.Text, nullable=False),
        sa.Column("due", sa.Text, nullable=False),
        sa.Column("known_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("balance_projections")
