"""Period labels of every billing cycle fit the documents and invoice-claims tables.

Revision ID: 0016
Revises: 0015

`period_label` was sized for calendar months (7 characters, "2024-01"); weekly
("2024-W03", 8) and anniversary labels ("2024-01-15", 10) did not fit on
PostgreSQL, so those invoices could not be issued there. SQLite does not enforce
VARCHAR lengths: nothing to do on it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_TABLES = ("documents", "invoice_claims")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.alter_column(table, "period_label", type_=sa.String(32), existing_type=sa.String(7))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.alter_column(table, "period_label", type_=sa.String(7), existing_type=sa.String(32))
