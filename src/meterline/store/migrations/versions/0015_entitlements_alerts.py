"""Features, catalog-wide alerts and recorded alerts (DESIGN §13).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entitlement_catalog",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_entitlement_catalog_code", "entitlement_catalog", ["kind", "code", "seq"])
    op.create_table(
        "alerts",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("period_label", sa.String(32), nullable=False),
        sa.Column("period_start", sa.BigInteger, nullable=False),
        sa.Column("period_end", sa.BigInteger, nullable=False),
        sa.Column("metric", sa.String(16), nullable=False),
        sa.Column("meter_code", sa.String(64)),
        sa.Column("threshold", sa.Text, nullable=False),
        sa.Column("observed", sa.Text, nullable=False),
        sa.Column("batch_id", sa.BigInteger),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
        # Once per threshold (or feature) per customer per period.
        sa.UniqueConstraint(
            "customer_id", "kind", "scope", "code", "period_label", name="uq_alerts_once"
        ),
    )


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_index("ix_entitlement_catalog_code", "entitlement_catalog")
    op.drop_table("entitlement_catalog")
