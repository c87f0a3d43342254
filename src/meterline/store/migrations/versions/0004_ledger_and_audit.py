"""Double-entry journal and the audit trail.

Revision ID: 0004
Revises: 0003

Documents issued before this revision get their journal entries here, from
the same pure posting rules the issuing transaction uses, so an upgraded
store reconciles like a new one.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "journal_entries",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("document", sa.String(32), nullable=False),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("memo", sa.Text, nullable=False),
        sa.Column("posted_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_journal_entries_customer", "journal_entries", ["customer_id", "seq"])
    op.create_index("ix_journal_entries_document", "journal_entries", ["document", "seq"])
    op.create_table(
        "journal_lines",
        sa.Column("entry_seq", sa.BigInteger, primary_key=True),
        sa.Column("line_no", sa.Integer, primary_key=True),
        sa.Column("account", sa.String(300), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("debit_minor", sa.BigInteger, nullable=False),
        sa.Column("credit_minor", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_journal_lines_account", "journal_lines", ["account", "currency"])
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("details", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"])
    _backfill_journal()


def _backfill_journal() -> None:
    from meterline.billing.body import decode
    from meterline.ledger.postings import issue_entry, status_entry
    from meterline.store.journal import post

    conn = op.get_bind()
    docs = conn.execute(sa.text("SELECT seq, number, body, issued_at FROM documents")).all()
    bodies = {str(r[1]): decode(str(r[2]).encode()) for r in docs}
    for seq, number, _, issued_at in docs:
        post(conn, int(seq), issue_entry(str(number), bodies[str(number)]), int(issued_at))
    for seq, number, status, at in conn.execute(
        sa.text("SELECT seq, number, status, at FROM document_status ORDER BY seq")
    ):
        entry = status_entry(str(number), str(status), bodies[str(number)])
        if entry is not None:
            post(conn, int(seq), entry, int(at))


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("journal_lines")
    op.drop_table("journal_entries")
