"""Webhooks: endpoints, the outbox, deliveries and their attempts.

Revision ID: 0010
Revises: 0008

The period-closing cursor starts at the store's current global watermark, so
upgrading an existing store announces only periods that close from now on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def _id() -> sa.Column[int]:
    return sa.Column(
        "id",
        sa.BigInteger().with_variant(sa.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    )


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        _id(),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("event_types", sa.Text, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "webhook_messages",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_webhook_messages_created", "webhook_messages", ["created_at"])
    op.create_table(
        "webhook_deliveries",
        _id(),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger, nullable=False),
        sa.Column("first_attempt_at", sa.BigInteger),
        sa.Column("locked_by", sa.String(64)),
        sa.Column("locked_until", sa.BigInteger),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger),
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["status", "next_attempt_at"]
    )
    op.create_index("ix_webhook_deliveries_message", "webhook_deliveries", ["message_id"])
    op.create_table(
        "webhook_attempts",
        _id(),
        sa.Column("delivery_id", sa.BigInteger, nullable=False),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.BigInteger, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", sa.BigInteger, nullable=False),
        sa.Column("latency_us", sa.BigInteger, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("response_excerpt", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("dispatcher", sa.String(64), nullable=False),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts", ["delivery_id", "id"])
    op.create_table(
        "webhook_period_closings",
        sa.Column("customer_id", sa.String(256), primary_key=True),
        sa.Column("period_label", sa.String(32), primary_key=True),
        sa.Column("message_id", sa.String(64), nullable=False),
        sa.Column("closes_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "webhook_cursor",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("closed_through", sa.BigInteger),
    )
    op.execute(
        "INSERT INTO webhook_cursor (id, closed_through) "
        "SELECT 1, watermark FROM global_watermark WHERE id = 1"
    )


def downgrade() -> None:
    for name in (
        "webhook_cursor",
        "webhook_period_closings",
        "webhook_attempts",
        "webhook_deliveries",
        "webhook_messages",
        "webhook_endpoints",
    ):
        op.drop_table(name)
