"""Table definitions, shared by queries and mirrored by the Alembic migrations.

Instants are BIGINT microseconds since the epoch (UTC); decimals are canonical
text; JSON is canonical text. That keeps SQLite and PostgreSQL byte-identical.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row: the knowledge sequence. Every appended fact takes seq values from it
# inside its own transaction, with the row locked until commit (no holes).
knowledge = Table(
    "knowledge",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

ingest_batches = Table(
    "ingest_batches",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("received_at", BigInteger, nullable=False),
    Column("origin", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("backfill", Boolean, nullable=False),
    Column("accepted", Integer, nullable=False),
    Column("duplicates", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("first_seq", BigInteger),
    Column("last_seq", BigInteger),
)

# On PostgreSQL `events` is partitioned by event month and (source, event_id)
# uniqueness lives in `event_keys`; on SQLite a unique index on events does it.
events = Table(
    "events",
    metadata,
    Column("seq", BigInteger, nullable=False),
    Column("source", String(256), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("customer_id", String(256), nullable=False),
    Column("event_type", String(256), nullable=False),
    Column("event_time", BigInteger, nullable=False),
    Column("properties", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("batch_id", BigInteger, nullable=False),
    Column("backfill", Boolean, nullable=False),
)

event_keys = Table(
    "event_keys",
    metadata,
    Column("source", String(256), primary_key=True),
    Column("event_id", String(256), primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("content_hash", String(64), nullable=False),
)

retractions = Table(
    "retractions",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("source", String(256), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("event_seq", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("retracted_at", BigInteger, nullable=False),
)

quarantine = Table(
    "quarantine",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("batch_id", BigInteger, nullable=False),
    Column("position", Integer, nullable=False),
    Column("source", Text),
    Column("code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("raw", LargeBinary, nullable=False),
    Column("received_at", BigInteger, nullable=False),
)
