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
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
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

meters = Table(
    "meters",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("event_type", String(256), nullable=False),
    Column("definition", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

source_watermarks = Table(
    "source_watermarks",
    metadata,
    Column("source", String(256), primary_key=True),
    Column("watermark", BigInteger, nullable=False),
    Column("last_received", BigInteger, nullable=False),
)

global_watermark = Table(
    "global_watermark",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("watermark", BigInteger),
)

late_arrivals = Table(
    "late_arrivals",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_seq", BigInteger, nullable=False),
    Column("source", String(256), nullable=False),
    Column("event_id", String(256), nullable=False),
    Column("meter_code", String(64), nullable=False),
    Column("customer_id", String(256), nullable=False),
    Column("window_start", BigInteger, nullable=False),
    Column("window_end", BigInteger, nullable=False),
    Column("late_by_us", BigInteger, nullable=False),
    Column("watermark", BigInteger, nullable=False),
    Column("received_at", BigInteger, nullable=False),
)

# A customer's event-time range whose billing must be re-derived: late events,
# backfills, retractions, retroactive prices, or an operator's request.
rerate_marks = Table(
    "rerate_marks",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("seq", BigInteger, nullable=False),
    Column("customer_id", String(256), nullable=False),
    Column("from_us", BigInteger, nullable=False),
    Column("to_us", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

price_books = Table(
    "price_books",
    metadata,
    Column("code", String(64), primary_key=True),
    Column("seq", BigInteger, nullable=False, unique=True),
    Column("currency", String(3), nullable=False),
    Column("rounding", String(16), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

price_versions = Table(
    "price_versions",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("book_code", String(64), nullable=False),
    Column("label", String(64), nullable=False),
    Column("effective_from", BigInteger, nullable=False),
    Column("definition", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("customer_id", String(256), nullable=False),
    Column("definition", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

documents = Table(
    "documents",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("number", String(32), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("customer_id", String(256), nullable=False),
    Column("period_label", String(32), nullable=False),
    Column("period_start", BigInteger, nullable=False),
    Column("period_end", BigInteger, nullable=False),
    Column("invoice_key", String(300), unique=True),
    Column("corrects", String(32)),
    Column("cutoff_seq", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("previous_hash", String(64), nullable=False),
    Column("document_hash", String(64), nullable=False),
    Column("forced", Boolean, nullable=False),
    Column("issued_at", BigInteger, nullable=False),
)

document_numbers = Table(
    "document_numbers",
    metadata,
    Column("kind", String(16), primary_key=True),
    Column("last", BigInteger, nullable=False),
)

document_status = Table(
    "document_status",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("number", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("at", BigInteger, nullable=False),
)

# The journal (DESIGN §9): one entry per money-moving fact, keyed by that
# fact's seq (a document's seq for its issue, a status fact's seq for a
# payment or void), written in the fact's own transaction. Append-only.
journal_entries = Table(
    "journal_entries",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("document", String(32), nullable=False),
    Column("customer_id", String(256), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("memo", Text, nullable=False),
    Column("posted_at", BigInteger, nullable=False),
)

# Amounts in integer minor units of the entry's currency (cents for USD):
# exact, and summed by the database itself without ever passing through float.
journal_lines = Table(
    "journal_lines",
    metadata,
    Column("entry_seq", BigInteger, primary_key=True),
    Column("line_no", Integer, primary_key=True),
    Column("account", String(300), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("debit_minor", BigInteger, nullable=False),
    Column("credit_minor", BigInteger, nullable=False),
)

# Who did what, when: one row per state-changing command, in its transaction.
audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("seq", BigInteger, nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("actor", String(256), nullable=False),
    Column("action", String(64), nullable=False),
    Column("details", Text, nullable=False),
)


# --- usage index (issue 17) ---------------------------------------------------
# The bitemporal usage index (DESIGN §4; metering/bitemporal.py): append-only
# rows per (customer, meter, grain, bucket, dimension group), each tagged with
# the seq range of the facts that caused it. Replaces the current-state
# `windows` table (dropped by migration 0005).
usage_index = Table(
    "usage_index",
    metadata,
    Column("customer_id", String(256), primary_key=True),
    Column("meter_code", String(64), primary_key=True),
    Column("grain", String(1), primary_key=True),
    Column("bucket_start", BigInteger, primary_key=True),
    Column("dimensions", Text, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("kind", String(3), primary_key=True),
    Column("first_seq", BigInteger, nullable=False),
    Column("state", Text, nullable=False),
    Column("events", BigInteger, nullable=False),
    # Clustered on the key on SQLite (migration 0021): a customer's rows are adjacent.
    sqlite_with_rowid=False,
)

# Derived, not a fact (migration 0023): the usage index's rollup passes. A pass at
# seq S appended the `cpt` rows of a customer's month units (`m`, `8`, `2` grains)
# with the fold of its day rows <= S; reads as known at K >= S start from them.
# Index ix_usage_rollups_seq (seq) in the migration.
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("customer_id", String(256), primary_key=True),
    Column("grain", String(1), primary_key=True),
    Column("bucket_start", BigInteger, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("rows", BigInteger, nullable=False),
)

# -- scale-out (issue 13): invoice runs split across processes -----------------

# Operational state, not a fact: which customer-periods an invoice run has done.
# A process claims a pending row with SELECT ... FOR UPDATE SKIP LOCKED and holds
# the row lock while it issues; the lock dies with its connection, so a killed
# process leaves its claim to the next one. The invoice itself stays unique by
# documents.invoice_key, whatever this table says.
invoice_claims = Table(
    "invoice_claims",
    metadata,
    Column("period_label", String(32), primary_key=True),
    Column("customer_id", String(256), primary_key=True),
    Column("state", String(8), nullable=False),
    Column("number", String(32)),
    Column("done_at", BigInteger),
)

# Operational state, not a fact (migration 0020): console sessions, shared by
# every server process; a row is deleted at logout or once expired.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("actor", String(256), nullable=False),
    Column("csrf", String(64), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("seen_us", BigInteger, nullable=False),
)

# Derived, not a fact (migration 0022): each customer's open-period amount due
# with the rating basis it was computed at (services/credits.py). Replaced in place.
balance_projections = Table(
    "balance_projections",
    metadata,
    Column("customer_id", String(256), primary_key=True),
    Column("period_label", String(32), primary_key=True),
    Column("basis", Text, nullable=False),
    Column("due", Text, nullable=False),
    Column("known_at", BigInteger, nullable=False),
)

# --- Webhooks (DESIGN §14; migration 0010) -----------------------------------
# Endpoints subscribe to event types ("[]" = all). A message is written to the
# outbox in the transaction of the fact that causes it, with one delivery per
# subscribed endpoint; every HTTP attempt is logged.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("url", Text, nullable=False),
    Column("secret", Text, nullable=False),
    Column("event_types", Text, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

webhook_messages = Table(
    "webhook_messages",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("message_id", String(64), nullable=False),
    Column("endpoint_id", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("first_attempt_at", BigInteger),
    Column("locked_by", String(64)),
    Column("locked_until", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("delivery_id", BigInteger, nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("endpoint_id", BigInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("started_at", BigInteger, nullable=False),
    Column("latency_us", BigInteger, nullable=False),
    Column("status_code", Integer),
    Column("response_excerpt", Text, nullable=False),
    Column("error", Text),
    Column("outcome", String(16), nullable=False),
    Column("dispatcher", String(64), nullable=False),
)

# period.closed is emitted once per customer-period; the cursor is the
# watermark up to which closings have been looked for.
webhook_period_closings = Table(
    "webhook_period_closings",
    metadata,
    Column("customer_id", String(256), primary_key=True),
    Column("period_label", String(32), primary_key=True),
    Column("message_id", String(64), nullable=False),
    Column("closes_at", BigInteger, nullable=False),
)

webhook_cursor = Table(
    "webhook_cursor",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("closed_through", BigInteger),
)

# --- Merkle log and incremental reconciliation (DESIGN §2, §9) -------------------
# Every perfect subtree of the log's Merkle tree, leaves (level 0) included,
# written when complete, in the transaction of the facts that complete it.
merkle_nodes = Table(
    "merkle_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True),
    Column("idx", BigInteger, primary_key=True),
    Column("hash", LargeBinary, nullable=False),
    sqlite_with_rowid=False,
)

# One row per clean reconcile run: what it covered, chained like documents.
reconcile_checkpoints = Table(
    "reconcile_checkpoints",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("seq", BigInteger, nullable=False),
    Column("fact_count", BigInteger, nullable=False),
    Column("root", String(64), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("report_hash", String(64), nullable=False),
    Column("previous_hash", String(64), nullable=False),
    Column("checkpoint_hash", String(64), nullable=False),
    Column("state", Text, nullable=False),
)

# --- newcomer: the seller shown on documents (DESIGN §7), a versioned fact ----
seller_versions = Table(
    "seller_versions",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("definition", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

# --- credit grants (issue 15; DESIGN §13) -------------------------------------
# One row per credit fact: a grant, a void, or breakage (expiry or rollover).
# Facts are appended, never updated: a void is a new row (billing/credits.py).
credit_facts = Table(
    "credit_facts",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("grant_id", String(32), nullable=False),
    Column("customer_id", String(256), nullable=False),
    Column("action", String(16), nullable=False),  # grant | void | expiry | rollover
    Column("amount", String(48), nullable=False),  # exact decimal text, the currency's digits
    Column("definition", Text, nullable=False),  # canonical JSON
    Column("content_hash", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)
# --- features, entitlements and alerts (DESIGN §13) --------------------------------
# The catalog's `features` and catalog-wide `alerts`, versioned facts like
# meters and customers: the latest row per (kind, code) is in force.
entitlement_catalog = Table(
    "entitlement_catalog",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("kind", String(16), nullable=False),  # feature | alert
    Column("code", String(64), nullable=False),
    Column("definition", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
)

# One fact per alert recorded: a threshold crossed or an entitlement exhausted,
# once per (customer, kind, scope, code, period); written in the transaction of
# the ingest batch that crossed it, with its webhook message.
alerts = Table(
    "alerts",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("customer_id", String(256), nullable=False),
    Column("kind", String(32), nullable=False),  # threshold_crossed | entitlement_exhausted
    Column("scope", String(16), nullable=False),  # catalog | customer
    Column("code", String(64), nullable=False),  # the alert's code or the feature's
    Column("period_label", String(32), nullable=False),
    Column("period_start", BigInteger, nullable=False),
    Column("period_end", BigInteger, nullable=False),
    Column("metric", String(16), nullable=False),  # quantity | spend
    Column("meter_code", String(64)),
    Column("threshold", Text, nullable=False),
    Column("observed", Text, nullable=False),
    Column("batch_id", BigInteger),
    Column("message_id", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
    UniqueConstraint("customer_id", "kind", "scope", "code", "period_label", name="uq_alerts_once"),
)
