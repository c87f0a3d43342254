"""The credit_facts table: grants, voids and breakage, appended under a seq (DESIGN §13).

Each fact is one row with its canonical definition and content hash; the ledger
entry it posts (ledger/credit_postings.py) is written in the same transaction,
under the same seq. `states` rebuilds every grant of a customer as known at K:
the grant facts, the catalog's `credits` list, what issued documents used
(store/documents.py credits_spent) and what voids and breakage released.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.billing.credits import Grant, GrantKind, GrantState
from meterline.billing.customers import Customer
from meterline.billing.invoice import catalog_grants
from meterline.domain.canonical import content_hash, dumps
from meterline.domain.events import decode_json
from meterline.domain.timestamps import parse_rfc3339
from meterline.ledger.credit_postings import EXPIRY, GRANT, ROLLOVER, VOID, credit_entry
from meterline.store import documents, journal


@dataclass(frozen=True)
class CreditFact:
    seq: int
    grant_id: str
    customer_id: str
    action: str
    amount: Decimal
    definition: dict[str, Any]
    content_hash: str
    recorded_at: int

    def entry_kind(self) -> GrantKind:
        return GrantKind(self.definition.get("kind", "paid"))


def grant_of(definition: dict[str, Any]) -> Grant:
    """A grant from its recorded definition (Grant.definition)."""
    expires = definition.get("expires_at")
    rollover = definition.get("rollover")
    return Grant(
        str(definition["id"]),
        str(definition["customer_id"]),
        str(definition["currency"]),
        Decimal(definition["amount"]),
        parse_rfc3339(definition["effective_at"]),
        int(definition["priority"]),
        None if expires is None else parse_rfc3339(expires),
        None if rollover is None else Decimal(rollover),
        GrantKind(definition["kind"]),
    )


def record(
    conn: Connection,
    seq: int,
    action: str,
    grant: Grant,
    amount: Decimal,
    details: dict[str, Any],
    now_us: int,
) -> None:
    """Append one credit fact at `seq` (taken by the caller under the sequence lock)
    and post its ledger entry. A non-grant fact records the grant's kind too, so its
    entry can be recomputed from the row alone."""
    definition = (
        grant.definition()
        if action == GRANT
        else {"id": grant.id, "kind": grant.kind.value, "currency": grant.currency, **details}
    )
    conn.execute(
        text(
            "INSERT INTO credit_facts (seq, grant_id, customer_id, action, amount, definition, "
            "content_hash, recorded_at) VALUES (:q, :g, :c, :a, :m, :d, :h, :t)"
        ),
        {
            "q": seq,
            "g": grant.id,
            "c": grant.customer_id,
            "a": action,
            "m": str(amount),
            "d": dumps(definition).decode(),
            "h": content_hash(definition),
            "t": now_us,
        },
    )
    entry = credit_entry(action, grant.id, grant.customer_id, grant.currency, amount, grant.kind)
    if entry is not None:
        journal.post(conn, seq, entry, now_us)


_COLUMNS = "seq, grant_id, customer_id, action, amount, definition, content_hash, recorded_at"


def _fact(row: Any) -> CreditFact:
    return CreditFact(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        Decimal(str(row[4])),
        decode_json(row[5]),
        str(row[6]),
        int(row[7]),
    )


def facts(
    conn: Connection, customer: str | None = None, known_at: int | None = None
) -> list[CreditFact]:
    """Credit facts in seq order: one customer's or all, up to K when given."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if customer is not None:
        where.append("customer_id = :c")
        params["c"] = customer
    if known_at is not None:
        where.append("seq <= :k")
        params["k"] = known_at
    sql = f"SELECT {_COLUMNS} FROM credit_facts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    return [_fact(r) for r in conn.execute(text(sql + " ORDER BY seq"), params)]


def grant_fact(conn: Connection, grant_id: str) -> CreditFact | None:
    row = conn.execute(
        text(f"SELECT {_COLUMNS} FROM credit_facts WHERE grant_id = :g AND action = 'grant'"),
        {"g": grant_id},
    ).first()
    return None if row is None else _fact(row)


def has_grants(conn: Connection, customer: str) -> bool:
    row = conn.execute(
        text("SELECT 1 FROM credit_facts WHERE customer_id = :c LIMIT 1"), {"c": customer}
    ).first()
    return row is not None


def customers_with_grants(conn: Connection, among: Sequence[str] | None = None) -> list[str]:
    """Customers with grant facts (``among``: only these, e.g. an invoice run's chunk)."""
    if among is None:
        rows = conn.execute(
            text("SELECT DISTINCT customer_id FROM credit_facts ORDER BY customer_id")
        ).all()
    elif not among:
        return []
    else:
        rows = conn.execute(
            text(
                "SELECT DISTINCT customer_id FROM credit_facts WHERE customer_id IN :cs "
                "ORDER BY customer_id"
            ).bindparams(bindparam("cs", expanding=True)),
            {"cs": list(among)},
        ).all()
    return [str(r[0]) for r in rows]


def states(conn: Connection, customer: Customer, known_at: int) -> list[GrantState]:
    """Every grant of the customer (facts, then the catalog's) as known at K."""
    rows = facts(conn, customer.id, known_at)
    return states_from(rows, customer, documents.credits_spent(conn, customer.id, known_at))


def states_from(
    rows: list[CreditFact], customer: Customer, spent: dict[str, Decimal]
) -> list[GrantState]:
    grants: dict[str, Grant] = {}
    expired: dict[str, Decimal] = {}
    voided: dict[str, Decimal] = {}
    reasons: dict[str, str] = {}
    for f in rows:
        if f.action == GRANT:
            grants[f.grant_id] = grant_of(f.definition)
        elif f.action == VOID:
            voided[f.grant_id] = voided.get(f.grant_id, Decimal(0)) + f.amount
            reasons[f.grant_id] = str(f.definition.get("reason", ""))
        elif f.action in (EXPIRY, ROLLOVER):
            expired[f.grant_id] = expired.get(f.grant_id, Decimal(0)) + f.amount
    out = [
        GrantState(
            g,
            spent.get(g.id, Decimal(0)),
            expired.get(g.id, Decimal(0)),
            voided.get(g.id, Decimal(0)),
            reasons.get(g.id),
        )
        for g in grants.values()
    ]
    out += [GrantState(g, spent.get(g.id, Decimal(0))) for g in catalog_grants(customer)]
    return out


def rollover_done(conn: Connection, grant_id: str, label: str) -> bool:
    rows = conn.execute(
        text("SELECT definition FROM credit_facts WHERE grant_id = :g AND action = 'rollover'"),
        {"g": grant_id},
    ).all()
    return any(decode_json(r[0]).get("period") == label for r in rows)
