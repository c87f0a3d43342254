"""The event store: knowledge sequence, batches, events, retractions, quarantine.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_id = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "knowledge",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO knowledge (id, seq) VALUES (1, 0)")
    op.create_table(
        "ingest_batches",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.BigInteger, nullable=False),
        sa.Column("origin", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("backfill", sa.Boolean, nullable=False),
        sa.Column("accepted", sa.Integer, nullable=False),
        sa.Column("duplicates", sa.Integer, nullable=False),
        sa.Column("rejected", sa.Integer, nullable=False),
        sa.Column("first_seq", sa.BigInteger),
        sa.Column("last_seq", sa.BigInteger),
    )
    if pg:
        # Partitioned by event month; partitions are created on demand by the
        # ingest path. Key uniqueness cannot span partitions, hence event_keys.
        op.execute(
            """
            CREATE TABLE events (
                seq BIGINT NOT NULL,
                source VARCHAR(256) NOT NULL,
                event_id VARCHAR(256) NOT NULL,
                customer_id VARCHAR(256) NOT NULL,
                event_type VARCHAR(256) NOT NULL,
                event_time BIGINT NOT NULL,
                properties TEXT NOT NULL,
                content_hash VARCHAR(64) NOT NULL,
                received_at BIGINT NOT NULL,
                batch_id BIGINT NOT NULL,
                backfill BOOLEAN NOT NULL,
                PRIMARY KEY (event_time, seq)
            ) PARTITION BY RANGE (event_time)
            """
        )
        op.create_index("ix_events_seq", "events", ["seq"])
    else:
        op.create_table(
            "events",
            sa.Column("seq", sa.BigInteger, primary_key=True),
            sa.Column("source", sa.String(256), nullable=False),
            sa.Column("event_id", sa.String(256), nullable=False),
            sa.Column("customer_id", sa.String(256), nullable=False),
            sa.Column("event_type", sa.String(256), nullable=False),
            sa.Column("event_time", sa.BigInteger, nullable=False),
            sa.Column("properties", sa.Text, nullable=False),
            sa.Column("content_hash", sa.String(64), nullable=False),
            sa.Column("received_at", sa.BigInteger, nullable=False),
            sa.Column("batch_id", sa.BigInteger, nullable=False),
            sa.Column("backfill", sa.Boolean, nullable=False),
        )
        op.create_index("ux_events_key", "events", ["source", "event_id"], unique=True)
    op.create_index("ix_events_usage", "events", ["customer_id", "event_type", "event_time"])
    if pg:
        op.create_table(
            "event_keys",
            sa.Column("source", sa.String(256), primary_key=True),
            sa.Column("event_id", sa.String(256), primary_key=True),
            sa.Column("seq", sa.BigInteger, nullable=False),
            sa.Column("content_hash", sa.String(64), nullable=False),
        )
    op.create_table(
        "retractions",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("event_id", sa.String(256), nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("retracted_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ux_retractions_key", "retractions", ["source", "event_id"], unique=True)
    op.create_table(
        "quarantine",
        sa.Column("id", _id, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.BigInteger, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("raw", sa.LargeBinary, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_quarantine_batch", "quarantine", ["batch_id", "position"])
