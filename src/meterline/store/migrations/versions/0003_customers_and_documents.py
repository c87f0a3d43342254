"""Customers (versioned), issued documents, gapless numbers and status facts.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "customers",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("definition", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_customers_id", "customers", ["customer_id", "seq"])
    op.create_table(
        "documents",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("number", sa.String(32), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("customer_id", sa.String(256), nullable=False),
        sa.Column("period_label", sa.String(7), nullable=False),
        sa.Column("period_start", sa.BigInteger, nullable=False),
        sa.Column("period_end", sa.BigInteger, nullable=False),
        # "customer|YYYY-MM" for invoices, NULL for notes: at most one invoice
        # per customer and period, enforced by the database itself.
        sa.Column("invoice_key", sa.String(300), unique=True),
        sa.Column("corrects", sa.String(32)),
        sa.Column("cutoff_seq", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("total", sa.String(64), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("previous_hash", sa.String(64), nullable=False),
        sa.Column("document_hash", sa.String(64), nullable=False),
        sa.Column("forced", sa.Boolean, nullable=False),
        sa.Column("issued_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_documents_customer", "documents", ["customer_id", "period_start"])
    op.create_table(
        "document_numbers",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("last", sa.BigInteger, nullable=False),
    )
    op.execute(
        "INSERT INTO document_numbers (kind, last) VALUES ('invoice', 0), ('credit_note', 0), ('debit_note', 0)"
    )
    op.create_table(
        "document_status",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_document_status_number", "document_status", ["number", "seq"])
