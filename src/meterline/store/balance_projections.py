"""The balance projection table (migration 0022): each customer's open-period
amount due with the rating basis (`Facts.rating_basis`) it was computed at.
Derived state, replaced in place; a reader uses a row only when its basis is the
basis as known now (services/credits.py)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from meterline.store.schema import balance_projections as t

Basis = tuple[int, ...]


def _text(basis: Basis) -> str:
    return ",".join(str(v) for v in basis)


def read(conn: Connection, customer_id: str, label: str) -> tuple[Basis, Decimal] | None:
    row = conn.execute(
        select(t.c.basis, t.c.due).where(t.c.customer_id == customer_id, t.c.period_label == label)
    ).first()
    if row is None:
        return None
    return tuple(int(v) for v in str(row[0]).split(",")), Decimal(str(row[1]))


def write(conn: Connection, rows: Sequence[tuple[str, str, Basis, Decimal, int]]) -> None:
    """Insert or replace (customer, label) -> (basis, due, known_at), one statement."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(t)
    stmt = stmt.on_conflict_do_update(
        index_elements=[t.c.customer_id, t.c.period_label],
        set_={
            "basis": stmt.excluded.basis,
            "due": stmt.excluded.due,
            "known_at": stmt.excluded.known_at,
        },
    )
    conn.execute(
        stmt,
        [
            {
                "customer_id": c,
                "period_label": label,
                "basis": _text(b),
                "due": str(due),
                "known_at": k,
            }
            for c, label, b, due, k in rows
        ],
    )
