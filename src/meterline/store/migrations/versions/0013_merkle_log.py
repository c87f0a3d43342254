"""The Merkle log (DESIGN §2) and reconcile checkpoints (DESIGN §9).

Revision ID: 0013
Revises: 0006

Builds the tree for every fact already in the store, in seq order, with the
same leaf rule the write path uses (store/merkle.py), so an upgraded store is
indistinguishable from one that grew its tree fact by fact. Documents issued
before have no tree head in their body and keep verifying as they are.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "merkle_nodes",
        sa.Column("level", sa.SmallInteger, primary_key=True),
        sa.Column("idx", sa.BigInteger, primary_key=True),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "reconcile_checkpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("fact_count", sa.BigInteger, nullable=False),
        sa.Column("root", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("report_hash", sa.String(64), nullable=False),
        sa.Column("previous_hash", sa.String(64), nullable=False),
        sa.Column("checkpoint_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
    )
    conn = op.get_bind()
    # Facts are found by seq when the tree is built and audited.
    op.create_index("ix_rerate_marks_seq", "rerate_marks", ["seq"])
    from meterline.store import merkle

    k = int(conn.execute(sa.text("SELECT seq FROM knowledge WHERE id = 1")).scalar_one())
    merkle.build(conn, k)


def downgrade() -> None:
    op.drop_index("ix_rerate_marks_seq", "rerate_marks")
    op.drop_table("reconcile_checkpoints")
    op.drop_table("merkle_nodes")
