"""Credit grants as facts: grants, voids and breakage (DESIGN §13).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "credit_facts",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("grant_id", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("amount", sa.String(48), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_credit_facts_customer", "credit_facts", ["customer_id", "seq"])
    op.create_index("ix_credit_facts_grant", "credit_facts", ["grant_id", "action"])


def downgrade() -> None:
    op.drop_table("credit_facts")
