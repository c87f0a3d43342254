"""An invoice run that several processes can share (issue 13, DESIGN §11).

On PostgreSQL every process of `invoice issue --period P` first records the
period's customers as pending claims (idempotent), then repeatedly claims one
pending customer with `SELECT ... FOR UPDATE SKIP LOCKED` on its own connection,
issues that customer's invoice in transactions of its own (the body is the
serial path's `invoicing.invoice_body`) and marks the claim done in the
claiming transaction. So:

- two processes never work on the same customer at once (the row lock), and a
  customer-period is invoiced at most once anyway (documents.invoice_key, checked
  again under the knowledge-sequence lock before appending);
- numbers stay gapless: `documents.append` takes the number under that lock, in
  the issuing transaction;
- a process killed mid-run loses its connection, PostgreSQL releases its row
  locks and rolls its open transactions back, so its claim is pending again for
  any other or later process. If it died after the invoice committed but before
  the claim did, the next claimer finds the invoice and just marks the claim done.

Computing a body takes most of an issue, and `_issue_one` does it while holding
the knowledge-sequence lock, which would serialise the processes (and every
ingest). So a claimer first computes the body outside the lock, in a
REPEATABLE READ snapshot as known at its last seq k0 (`_issue_from_snapshot`),
then takes the lock (last seq k) and appends that body with cutoff k0 only if
every fact of (k0, k] is an event or a document of another customer: then the
store as known at k0 and at k are the same for this invoice, and recomputing
it at its recorded cutoff k0 reproduces it (DESIGN §2). Any other fact in
between (a catalog change, a retraction, a status change, this customer's
events or documents, or a kind of fact this module does not know) sends it
through `_issue_one` under the lock instead: slower, never wrong.

Refused customers (period not closed) stay pending for a later run; a process
does not retry them itself. SQLite has a single writer, so there this is the
serial `invoicing.issue`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.billing import body as typed
from meterline.billing.document import Issued, Kind, body_hash
from meterline.billing.periods import Period
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.services import invoicing
from meterline.services.invoicing import IssueResult
from meterline.store import documents, sequence
from meterline.store.database import Store, is_transient

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


def _unrelated_since(conn: Connection, customer: str, k0: int, k: int) -> bool:
    """Whether every fact with seq in (k0, k] is another customer's event or document."""
    params = {"lo": k0, "hi": k, "c": customer}
    events = conn.execute(
        text("SELECT COUNT(*) FROM events WHERE seq > :lo AND seq <= :hi AND customer_id <> :c"),
        params,
    ).scalar_one()
    docs = conn.execute(
        text("SELECT COUNT(*) FROM documents WHERE seq > :lo AND seq <= :hi AND customer_id <> :c"),
        params,
    ).scalar_one()
    return int(events) + int(docs) == k - k0


@dataclass(frozen=True)
class Snapshot:
    """An invoice body computed as known at k0, not yet issued."""

    customer: str
    label: str
    k0: int
    body: typed.Body
    period: Period


def compute_at_snapshot(
    store: Store, customer: str, label: str, now_us: int, force: bool
) -> Snapshot | str:
    """Phase 1, no lock: the body as known at the snapshot's last seq (or the number
    of the invoice already issued)."""
    with store.engine.connect() as snap:
        snap = snap.execution_options(isolation_level="REPEATABLE READ")
        with snap.begin():
            k0 = sequence.current(snap)
            existing = documents.invoice_for(snap, customer, label)
            if existing is not None:
                return existing
            body, period = invoicing.invoice_body(snap, customer, label, k0, now_us, force)
    return Snapshot(customer, label, k0, body, period)


def append_if_unchanged(store: Store, s: Snapshot, now_us: int, force: bool) -> Issued | str | None:
    """Phase 2, under the lock: issue the snapshot's body if nothing it read has
    changed since k0; None when something did (the caller recomputes)."""
    with store.write() as conn:
        k = sequence.lock(conn)
        existing = documents.invoice_for(conn, s.customer, s.label)
        if existing is not None:
            return existing
        if k != s.k0 and not _unrelated_since(conn, s.customer, s.k0, k):
            return None
        issued = documents.append(
            conn, Kind.INVOICE, s.body, body_hash(s.body), s.period, now_us, force
        )
        invoicing.settle_credits(conn, s.customer, s.period, now_us)
        return issued


def _issue_from_snapshot(
    store: Store, customer: str, label: str, now_us: int, force: bool
) -> Issued | str:
    snapshot = compute_at_snapshot(store, customer, label, now_us, force)
    if isinstance(snapshot, str):
        return snapshot
    issued = append_if_unchanged(store, snapshot, now_us, force)
    if issued is None:
        return invoicing._issue_one(store, customer, label, now_us, force)
    return issued


def run(store: Store, label: str, now_us: int, force: bool = False, jobs: int = 1) -> IssueResult:
    """Issue the period's invoices, sharing the work with any concurrent run (on
    SQLite: this process, with ``jobs`` worker processes computing the bodies)."""
    if not store.is_postgres:
        return invoicing.issue(store, label, now_us, None, force, jobs)
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
                issued = _issue_from_snapshot(store, customer, label, now_us, force)
            except MeterlineError as exc:  # one customer never stops the run (issue 11)
                if exc.code == ErrorCode.STORE_UNAVAILABLE:
                    raise
                if exc.code == ErrorCode.PERIOD_NOT_CLOSED:
                    result.refused.append((customer, exc.message))
                else:
                    result.failed.append((customer, str(exc.code), exc.message))
                continue  # the claim stays pending (rolled back with nothing changed)
            except Exception as exc:
                if is_transient(exc):
                    raise
                message = f"{customer} cannot be invoiced for {label}: {type(exc).__name__}: {exc}"
                result.failed.append((customer, str(ErrorCode.INVOICE_FAILED), message[:500]))
                continue
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
