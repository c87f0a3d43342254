"""Progressive billing, the service (DESIGN §7; the rule is billing/progressive.py).

`issue_interims` looks at the open period of every progressive subscription and
issues an interim invoice where the usage not yet billed, as known at the cutoff
K, reached the threshold: in one transaction holding the knowledge lock, numbered
from the same gapless INV counter, posted to the ledger like any invoice.
`finalize` turns the whole-period body of a period's invoice into the final
invoice when the period had interims; `recompute` re-derives either at its cutoff
for `verify` and reconcile. The interims of a period are the non-void invoices of
that customer-period with role "interim", in issue order, as known before the
document being computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing.body import Body
from meterline.billing.credits import consume
from meterline.billing.document import FORMAT, Issued, Kind, Status, body_hash
from meterline.billing.invoice import assemble
from meterline.billing.periods import Period
from meterline.billing.progressive import (
    FINAL,
    INTERIM,
    Credit,
    final_body,
    interim_body,
    pending,
    thresholds,
)
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Rounding
from meterline.services import invoicing
from meterline.store import credit_facts, documents, sequence
from meterline.store.customer_catalog import load_customer, load_customers
from meterline.store.database import Store

_OF_PERIOD = text(
    "SELECT number, seq, body FROM documents WHERE customer_id = :c AND period_label = :l "
    "AND kind = 'invoice' ORDER BY seq"
)


def interims_of(
    conn: Connection, customer_id: str, label: str, before_seq: int | None = None
) -> list[Issued]:
    """The period's non-void interim invoices in issue order (optionally only those
    issued before `before_seq`, with their status as known then)."""
    out = []
    for number, seq, _ in conn.execute(_OF_PERIOD, {"c": customer_id, "l": label}).all():
        if before_seq is not None and int(seq) >= before_seq:
            continue
        doc = documents.get(conn, str(number))
        if doc.body.role_of != INTERIM:
            continue
        if documents.status_of(conn, doc.number, before_seq) == Status.VOID:
            continue
        out.append(doc)
    return out


@dataclass(frozen=True)
class _Whole:
    body: Body
    period: Period
    rounding: Rounding
    credit: Credit


def _whole(
    conn: Connection,
    customer_id: str,
    label: str,
    k: int,
    fmt: int = FORMAT,
    checkpoint: bool = False,
) -> _Whole:
    """The whole period's invoice body as known at K, with what credit can pay."""
    b = invoicing.gather(conn, customer_id, label, k, fmt, checkpoint=checkpoint)
    grants = credit_facts.states(conn, b.customer, k)
    body = invoicing.finish_body(
        conn, assemble(b.customer, b.period, b.subscriptions, k, grants), k, fmt
    )
    rounding = b.subscriptions[-1].book.rounding if b.subscriptions else Rounding.HALF_UP

    def credit(due: Decimal) -> list[tuple[str, Decimal]]:
        return consume(grants, due, b.period.start, b.period.end)

    return _Whole(body, b.period, rounding, credit)


def finalize(conn: Connection, body: Body, credit: Credit) -> Body:
    """The final invoice for a whole-period body when its period had interims (else the body
    unchanged). Only progressive customers pay for the look-up."""
    if not thresholds(body):
        return body
    interims = interims_of(conn, body.customer_id, body.period.label)
    if not interims:
        return body
    return final_body(body, [(d.number, d.body) for d in interims], credit)


def preview_body(conn: Connection, customer_id: str, label: str, k: int) -> Body:
    """The draft of a period's invoice as known at K: with interims, the final to be."""
    whole = _whole(conn, customer_id, label, k)
    if not thresholds(whole.body):
        return whole.body
    interims = interims_of(conn, customer_id, label)
    if not interims:
        return whole.body
    return final_body(whole.body, [(d.number, d.body) for d in interims], whole.credit)


def recompute(conn: Connection, doc: Issued) -> Body:
    """An interim or final invoice as the store knew it at its cutoff (for `verify`)."""
    body = doc.body
    seq = _doc_seq(conn, doc.number)
    cid, label, k = body.customer_id, body.period.label, body.cutoff_seq
    whole = _whole(conn, cid, label, k, body.doc_format)
    interims = interims_of(conn, cid, label, before_seq=seq)
    if body.role_of == INTERIM:
        return interim_body(whole.body, [d.body for d in interims], whole.rounding, whole.credit)
    if body.role_of == FINAL:
        return final_body(whole.body, [(d.number, d.body) for d in interims], whole.credit)
    raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"{doc.number} is not a progressive invoice")


def _doc_seq(conn: Connection, number: str) -> int:
    return int(
        conn.execute(
            text("SELECT seq FROM documents WHERE number = :n"), {"n": number}
        ).scalar_one()
    )


@dataclass
class InterimResult:
    issued: list[Issued] = field(default_factory=list)
    checked: list[tuple[str, str]] = field(default_factory=list)  # (customer, label) looked at
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (customer, code, message)


def open_periods(store: Store, now_us: int, customer: str | None = None) -> list[tuple[str, str]]:
    """(customer, label) of every progressive subscription's period that holds `now` or
    has ended without a final invoice yet (the wait for its closing), in a stable order."""
    out: set[tuple[str, str]] = set()
    with store.read() as conn:
        customers = (
            [load_customer(conn, customer, sequence.current(conn))]
            if customer
            else load_customers(conn)
        )
        for c in customers:
            for s in c.subscriptions:
                if s.threshold is None or s.start > now_us:
                    continue
                cycle = s.cycle(c.timezone)
                current = cycle.period_of(now_us)
                previous = cycle.period_of(current.start - 1)
                for p in (previous, current):
                    if s.active(p.start, p.end) is None:
                        continue
                    if documents.invoice_for(conn, c.id, p.label) is None:
                        out.add((c.id, p.label))
    return sorted(out)


def issue_interims(store: Store, now_us: int, customer: str | None = None) -> InterimResult:
    """Issue the interim invoices due now (idempotent: none is due right after one)."""
    result = InterimResult()
    for cid, label in open_periods(store, now_us, customer):
        result.checked.append((cid, label))
        try:
            doc = _issue_one(store, cid, label, now_us)
        except MeterlineError as exc:
            if customer is not None or exc.code == ErrorCode.STORE_UNAVAILABLE:
                raise
            result.failed.append((cid, str(exc.code), exc.message))
            continue
        if doc is not None:
            result.issued.append(doc)
    if result.issued:
        from meterline.services.finance import with_finance

        with store.read() as conn:
            result.issued = [with_finance(conn, d) for d in result.issued]
    return result


def _issue_one(store: Store, cid: str, label: str, now_us: int) -> Issued | None:
    with store.write() as conn:
        k = sequence.lock(conn)
        if documents.invoice_for(conn, cid, label) is not None:
            return None  # the final invoice is out: corrections take over
        whole = _whole(conn, cid, label, k, checkpoint=True)
        interims = [d.body for d in interims_of(conn, cid, label)]
        if not pending(whole.body, interims, whole.rounding).due(thresholds(whole.body)):
            return None
        body = interim_body(whole.body, interims, whole.rounding, whole.credit)
        return documents.append(
            conn, Kind.INVOICE, body, body_hash(body), whole.period, now_us, False
        )
