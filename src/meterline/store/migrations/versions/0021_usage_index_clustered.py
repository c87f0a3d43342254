"""On SQLite, the usage index becomes a WITHOUT ROWID table: stored in its
primary key's order (customer, meter, grain, bucket, dimensions, seq, kind).

Revision ID: 0021
Revises: 0020

A rowid table keeps its rows in insertion order and the primary key as a separate
index, so reading one customer's month (a few hundred rows written by as many
ingest batches) looked up each row at a different place in the file: on the 10M
benchmark store an entitlement check spent ~5 ms in those page reads. Clustered
on the key, the same rows sit on a few adjacent pages (docs/PERFORMANCE.md,
"Entitlement checks"), and ingest maintains one B-tree instead of two.

PostgreSQL keeps its heap table (no clustered tables there); nothing to do.
The rows are copied as they are: same rows, same states, same seqs.
"""

from __future__ import annotations

from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

_COLUMNS = (
    "customer_id, meter_code, grain, bucket_start, dimensions, seq, kind, first_seq, state, events"
)
_KEY = "customer_id, meter_code, grain, bucket_start, dimensions, seq, kind"


def _rebuild(without_rowid: bool) -> None:
    suffix = " WITHOUT ROWID" if without_rowid else ""
    op.execute(
        "CREATE TABLE usage_index_new (customer_id VARCHAR(256) NOT NULL, "
        "meter_code VARCHAR(64) NOT NULL, grain VARCHAR(1) NOT NULL, "
        "bucket_start BIGINT NOT NULL, dimensions TEXT NOT NULL, seq BIGINT NOT NULL, "
        "kind VARCHAR(3) NOT NULL, first_seq BIGINT NOT NULL, state TEXT NOT NULL, "
        f"events BIGINT NOT NULL, PRIMARY KEY ({_KEY})){suffix}"
    )
    op.execute(
        f"INSERT INTO usage_index_new ({_COLUMNS}) "
        f"SELECT {_COLUMNS} FROM usage_index ORDER BY {_KEY}"
    )
    op.execute("DROP TABLE usage_index")  # its indexes go with it
    op.execute("ALTER TABLE usage_index_new RENAME TO usage_index")
    op.execute("CREATE INDEX ix_usage_index_seq ON usage_index (seq)")
    op.execute(
        "CREATE INDEX ix_usage_index_states ON usage_index "
        "(customer_id, meter_code, grain, bucket_start, dimensions, seq) "
        "WHERE kind IN ('set', 'cpt')"
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(without_rowid=True)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild(without_rowid=False)
