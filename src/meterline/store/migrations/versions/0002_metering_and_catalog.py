"""Metering index (windows, watermarks, late arrivals, re-rating marks) and catalog facts.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "meters",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("event_type", sa.String(256), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "windows",
        sa.Column("meter_code", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(256), primary_key=True),
        sa.Column("dimensions", sa.Text, primary_key=True),
        sa.Column("window_start", sa.BigInteger, primary_key=True),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("event_count", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_windows_customer", "windows", ["customer_id", "meter_code", "window_start"])
    op.create_table(
        "source_watermarks",
        sa.Column("source", sa.String(256), primary_key=True),
        sa.Column("watermark", sa.BigInteger, nullable=False),
        sa.Column("last_received", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "global_watermark",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("watermark", sa.BigInteger),
    )
    op.execute("INSERT INTO global_watermark (id, watermark) VALUES (1, NULL)")
    op.create_table(
        "late_arrivals",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("meter_code", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("window_start", sa.BigInteger, nullable=False),
        sa.Column("window_end", sa.BigInteger, nullable=False),
        sa.Column("late_by_us", sa.BigInteger, nullable=False),
        sa.Column("watermark", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_late_arrivals_customer", "late_arrivals", ["customer_id", "window_start"])
    op.create_table(
        "rerate_marks",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("from_us", sa.BigInteger, nullable=False),
        sa.Column("to_us", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_rerate_marks_customer", "rerate_marks", ["customer_id", "from_us"])
    op.create_table(
        "price_books",
        sa.Column("code", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False, unique=True),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rounding", sa.String(16), nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "price_versions",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("book_code", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("effective_from", sa.BigInteger, nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
    )
    op.create_index(
        "ux_price_versions_label", "price_versions", ["book_code", "label"], unique=True
    )
