"""An invoice run that several processes can share (issue 13, DESIGN §11).

On PostgreSQL every process of `invoice issue --period P` first records the
period's customers as pending claims (idempotent), then repeatedly claims one
pending customer with `SELECT ... FOR UPDATE SKIP LOCKED` on its own connection,
issues that customer's invoice with the serial path's per-customer function
(`invoicing._issue_one`, its own transaction) and marks the claim done in the
claiming transaction. So:

- two processes never work on the same customer at once (the row lock), and a
  customer-period is invoiced at most once anyway (documents.invoice_key, checked
  under the knowledge-sequence lock by `_issue_one`);
- numbers stay gapless: `_issue_one` takes the number in the issuing transaction;
- a process killed mid-run loses its connection, PostgreSQL releases its row
  locks and rolls its open transactions back, so its claim is pending again for
  any other or later process. If it died after the invoice committed but before
  the claim did, the next claimer finds the invoice and just marks the claim done.

Refused customers (period not closed) stay pending for a later run; a process
does not retry them itself. SQLite has a single writer, so there this is the
serial `invoicing.issue`.
"""

from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.services import invoicing
from meterline.services.invoicing import IssueResult
from meterline.store.database import Store

PENDING = "pending"
DONE = "done"

_CLAIM = text(
    "SELECT customer_id FROM invoice_claims WHERE period_label = :p AND state = 'pending' "
    "AND NOT (customer_id IN :tried) ORDER BY customer_id LIMIT 1 FOR UPDATE SKIP LOCKED"
).bindparams(bindparam("tried", expanding=True))


def seed_claims(store: Store, label: str) -> int:
    """Record every customer billable in the period as a pending claim (idempotent)."""
    customers = invoicing.customers_for(store, label)
    if customers:
        with store.write() as conn:
            conn.execute(
                text(
                    "INSERT INTO invoice_claims (period_label, customer_id, state) "
                    "VALUES (:p, :c, 'pending') ON CONFLICT DO NOTHING"
                ),
                [{"p": label, "c": c} for c in customers],
            )
    return len(customers)


def _claim(conn: Connection, label: str, tried: set[str]) -> str | None:
    # An expanding IN with an empty list is rendered as always-false by SQLAlchemy;
    # a sentinel no customer can have keeps the statement one shape.
    row = conn.execute(_CLAIM, {"p": label, "tried": sorted(tried) or [""]}).first()
    return None if row is None else str(row[0])


def _done(conn: Connection, label: str, customer: str, number: str, now_us: int) -> None:
    conn.execute(
        text(
            "UPDATE invoice_claims SET state = 'done', number = :n, done_at = :t "
            "WHERE period_label = :p AND customer_id = :c"
        ),
        {"n": number, "t": now_us, "p": label, "c": customer},
    )


def _done_elsewhere(conn: Connection, label: str, tried: set[str]) -> list[tuple[str, str]]:
    """Customers invoiced by earlier or concurrent runs, as the serial path reports them."""
    rows = conn.execute(
        text(
            "SELECT customer_id, number FROM invoice_claims WHERE period_label = :p "
            "AND state = 'done' ORDER BY customer_id"
        ),
        {"p": label},
    ).all()
    return [(str(c), str(n)) for c, n in rows if str(c) not in tried]


def run(store: Store, label: str, now_us: int, force: bool = False) -> IssueResult:
    """Issue the period's invoices, sharing the work with any concurrent run."""
    if not store.is_postgres:
        return invoicing.issue(store, label, now_us, None, force)
    seed_claims(store, label)
    result = IssueResult()
    tried: set[str] = set()
    while True:
        with store.engine.connect() as conn, conn.begin():
            customer = _claim(conn, label, tried)
            if customer is None:
                result.already.extend(_done_elsewhere(conn, label, tried))
                return result
            tried.add(customer)
            try:
                issued = invoicing._issue_one(store, customer, label, now_us, force)
            except MeterlineError as exc:
                if exc.code != ErrorCode.PERIOD_NOT_CLOSED:
                    raise
                result.refused.append((customer, exc.message))
                continue  # the claim stays pending (rolled back with nothing changed)
            if isinstance(issued, str):
                result.already.append((customer, issued))
                _done(conn, label, customer, issued, now_us)
            else:
                result.issued.append(issued)
                _done(conn, label, customer, issued.number, now_us)


def pending(store: Store, label: str) -> list[str]:
    """Customers of the period not yet done (for operators and tests)."""
    with store.read() as conn:
        rows = conn.execute(
            text(
                "SELECT customer_id FROM invoice_claims WHERE period_label = :p "
                "AND state = 'pending' ORDER BY customer_id"
            ),
            {"p": label},
        ).scalars()
        return [str(r) for r in rows]
