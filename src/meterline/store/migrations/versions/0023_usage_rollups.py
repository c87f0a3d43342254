"""Rollup passes of the usage index (per customer and UTC month).

Revision ID: 0023
Revises: 0022

Derived, not a fact (no Merkle leaf): a pass at seq S appends month `cpt` rows
to `usage_index` (grains 'm', '8', '2'; caused by no fact) and records, per
customer and month, that it did, so a read as known at K finds each customer's
latest pass <= K with one probe. A store upgraded
to this revision has no pass yet: every read stays on day rollups until
`meterline index rollup` runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("customer_id", sa.String(256), primary_key=True),
        sa.Column("grain", sa.String(1), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_rollups_seq", "usage_rollups", ["seq"])


def downgrade() -> None:
    op.execute("DELETE FROM usage_index WHERE grain IN ('m', '8', '2')")
    op.drop_index("ix_usage_rollups_seq", "usage_rollups")
    op.drop_table("usage_rollups")
