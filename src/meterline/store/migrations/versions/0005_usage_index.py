"""The bitemporal usage index replaces the current-state window index.

Revision ID: 0005
Revises: 0004

Builds ``usage_index`` for an existing store from its facts, as the live
ingest path would have written it (see ``store.usage_index.rebuild``), then
drops ``windows``. Documents issued before this revision carry no ``format``
field (format 1) and keep verifying through the legacy raw-event path.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_index",
        sa.Column("customer_id", sa.String(256), primary_key=True),
        sa.Column("meter_code", sa.String(64), primary_key=True),
        sa.Column("grain", sa.String(1), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("dimensions", sa.Text, primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.String(3), primary_key=True),
        sa.Column("first_seq", sa.BigInteger, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_index_seq", "usage_index", ["seq"])
    # The state rows (set, checkpoint) of a bucket: where a fold as known at K starts.
    op.create_index(
        "ix_usage_index_states",
        "usage_index",
        ["customer_id", "meter_code", "grain", "bucket_start", "dimensions", "seq"],
        sqlite_where=sa.text("kind IN ('set', 'cpt')"),
        postgresql_where=sa.text("kind IN ('set', 'cpt')"),
    )
    from meterline.store.usage_index import rebuild

    rebuild(op.get_bind())
    op.drop_index("ix_windows_customer", table_name="windows")
    op.drop_table("windows")


def downgrade() -> None:
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
    from meterline.store.usage_index import current_windows

    conn = op.get_bind()
    rows = current_windows(conn)
    if rows:
        conn.execute(
            sa.text(
                "INSERT INTO windows (meter_code, customer_id, dimensions, window_start, "
                "window_end, state, event_count, version, last_seq, updated_at) "
                "VALUES (:m, :c, :d, :s, :e, :st, :n, :v, :q, 0)"
            ),
            rows,
        )
    op.drop_index("ix_usage_index_states", table_name="usage_index")
    op.drop_index("ix_usage_index_seq", table_name="usage_index")
    op.drop_table("usage_index")
