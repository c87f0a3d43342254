"""Customers as versioned facts: the version in force as known at K."""

from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.billing.customers import Customer, parse_customer
from meterline.domain.canonical import dumps
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import decode_json
from meterline.store import sequence

# Parsed customers by their stored definition text: a version never changes and
# equal text is an equal (frozen) value, so a balance or entitlement check reads one
# short row and parses nothing it parsed before. Bounded; cleared when full.
_PARSED_SIZE = 20_000
_parsed: dict[str, Customer] = {}


def load_customer(conn: Connection, customer_id: str, known_at: int | None = None) -> Customer:
    k = sequence.current(conn) if known_at is None else known_at
    row = conn.execute(
        text(
            "SELECT definition FROM customers WHERE customer_id = :c AND seq <= :k "
            "ORDER BY seq DESC LIMIT 1"
        ),
        {"c": customer_id, "k": k},
    ).first()
    if row is None:
        raise MeterlineError(ErrorCode.UNKNOWN_CUSTOMER, f"no customer {customer_id!r}")
    definition = str(row[0])
    found = _parsed.get(definition)
    if found is None:
        found = parse_customer(decode_json(definition), f"customer {customer_id}")
        if len(_parsed) >= _PARSED_SIZE:
            _parsed.clear()
        _parsed[definition] = found
    return found


def load_customers_by_id(
    conn: Connection, customer_ids: list[str], known_at: int
) -> dict[str, Customer | MeterlineError]:
    """`load_customer` of many customers with one statement: each id maps to its
    customer as known at K, or to the error `load_customer` would raise for it."""
    rows = conn.execute(
        text(
            "SELECT c.customer_id, c.definition FROM customers c WHERE c.customer_id IN :ids "
            "AND c.seq = (SELECT MAX(c2.seq) FROM customers c2 WHERE "
            "c2.customer_id = c.customer_id AND c2.seq <= :k)"
        ).bindparams(bindparam("ids", expanding=True)),
        {"ids": customer_ids, "k": known_at},
    ).all()
    found = {str(r[0]): r[1] for r in rows}
    out: dict[str, Customer | MeterlineError] = {}
    for cid in customer_ids:
        definition = found.get(cid)
        if definition is None:
            out[cid] = MeterlineError(ErrorCode.UNKNOWN_CUSTOMER, f"no customer {cid!r}")
            continue
        try:
            out[cid] = parse_customer(decode_json(definition), f"customer {cid}")
        except MeterlineError as exc:
            out[cid] = exc
    return out


def customer_ids(conn: Connection, known_at: int) -> list[str]:
    """Every customer id with a version as known at K, sorted."""
    rows = conn.execute(
        text("SELECT DISTINCT customer_id FROM customers WHERE seq <= :k ORDER BY customer_id"),
        {"k": known_at},
    )
    return [str(r[0]) for r in rows]


def load_customers(conn: Connection, known_at: int | None = None) -> list[Customer]:
    """The latest version of every customer as known at K, by id."""
    k = sequence.current(conn) if known_at is None else known_at
    rows = conn.execute(
        text(
            "SELECT c.customer_id, c.definition FROM customers c WHERE c.seq = "
            "(SELECT MAX(c2.seq) FROM customers c2 WHERE c2.customer_id = c.customer_id AND c2.seq <= :k) "
            "ORDER BY c.customer_id"
        ),
        {"k": k},
    ).all()
    return [parse_customer(decode_json(r[1]), f"customer {r[0]}") for r in rows]


def apply_customer(conn: Connection, customer: Customer, now_us: int) -> bool:
    """Record a new version if the definition changed; True when recorded."""
    row = conn.execute(
        text("SELECT content_hash FROM customers WHERE customer_id = :c ORDER BY seq DESC LIMIT 1"),
        {"c": customer.id},
    ).first()
    if row is not None and str(row[0]) == customer.content_hash:
        return False
    conn.execute(
        text(
            "INSERT INTO customers (seq, customer_id, definition, content_hash, recorded_at) "
            "VALUES (:q, :c, :d, :h, :t)"
        ),
        {
            "q": sequence.take(conn),
            "c": customer.id,
            "d": dumps(customer.definition()).decode(),
            "h": customer.content_hash,
            "t": now_us,
        },
    )
    return True
