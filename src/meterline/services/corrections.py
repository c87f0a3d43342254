"""Re-rating and correction documents (DESIGN §8).

A correction is never derived from the late events alone: the whole period is
recomputed as known now (K2) and compared, line by line, with what was billed
(the invoice plus every correction already issued for it). With tiers or a
minimum, a late event's price depends on everything before it, so only the
whole-period difference is exact. Line identity is price book + charge +
dimension values.

Credits applied stay on the original invoice; a correction adjusts usage,
fees and tax only. Tax delta = tax(new subtotal) - tax billed so far, so no
rounding drift accumulates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing import body as typed
from meterline.billing.credit_note import BilledSoFar, diff
from meterline.billing.document import (
    FORMAT,
    Issued,
    Kind,
    Status,
    body_hash,
    format_of,
)
from meterline.billing.periods import Period
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.store import audit, documents, sequence
from meterline.store.database import Store
from meterline.store.facts import facts
from meterline.store.window_index import add_mark


@dataclass
class Billed:
    """What has been billed for one customer-period so far."""

    invoice: Issued
    notes: list[Issued]
    so_far: BilledSoFar

    @property
    def cutoff(self) -> int:
        return self.so_far.cutoff

    @classmethod
    def of(
        cls, invoice: Issued, notes: list[Issued], interims: list[Issued] | None = None
    ) -> Billed:
        """`interims`: the period's interim invoices when `invoice` is a final one
        (progressive billing): billed = interims + final + notes."""
        docs = [*(interims or []), invoice, *notes]
        return cls(invoice, notes, BilledSoFar.of([d.body for d in docs]))


def _interims(conn: Connection, invoice: Issued) -> list[Issued]:
    """The interim invoices a final invoice nets (services/progressive.py), else none."""
    if invoice.body.role_of != "final":
        return []
    from meterline.services.progressive import interims_of

    body = invoice.body
    return interims_of(conn, body.customer_id, body.period.label, _doc_seq(conn, invoice.number))


def notes_for(conn: Connection, number: str, before_seq: int | None = None) -> list[Issued]:
    """Non-void corrections of an invoice, in issue order (optionally only earlier ones)."""
    out = []
    rows = conn.execute(
        text("SELECT number, seq FROM documents WHERE corrects = :n ORDER BY seq"), {"n": number}
    ).all()
    for note_number, seq in rows:
        if before_seq is not None and int(seq) >= before_seq:
            continue
        if documents.status_of(conn, str(note_number), before_seq) == Status.VOID:
            continue
        out.append(documents.get(conn, str(note_number)))
    return out


def _doc_seq(conn: Connection, number: str) -> int:
    return int(
        conn.execute(
            text("SELECT seq FROM documents WHERE number = :n"), {"n": number}
        ).scalar_one()
    )


def reasons(conn: Connection, billed: Billed, k2: int, doc_format: int = FORMAT) -> list[str]:
    """What changed between the billed cutoff and K2, in words (deterministic).
    Format 1 notes keep the wording they were issued with ("1 events"), so they
    still reproduce; from format 2 on a single event reads "1 event"."""

    def events(n: int) -> str:
        return f"{n} event" if n == 1 and doc_format >= 2 else f"{n} events"

    body = billed.invoice.body
    c, lo, hi = (
        body.customer_id,
        parse_rfc3339(body.period.start),
        parse_rfc3339(body.period.end),
    )
    k1, number = billed.cutoff, billed.invoice.number
    changed = facts(conn).changes(c, lo, hi, k1, k2)
    out = []
    if changed.events:
        extra = f" ({changed.backfilled} of them backfilled)" if changed.backfilled else ""
        out.append(f"{events(changed.events)} received after {number} was issued{extra}")
    if changed.retracted:
        out.append(f"{events(changed.retracted)} retracted")
    books = sorted({s.price_book for s in body.subscriptions})
    if books:
        for book, label, definition in changed.price_versions:
            if book in books:
                why = definition.get("reason")
                out.append(
                    f"price version {label} of {book} recorded retroactively"
                    + (f": {why}" if why else "")
                )
    if changed.customer_versions:
        out.append(f"customer {c}'s terms changed (new catalog version)")
    out.extend(f"re-rating requested: {r}" for r in changed.manual_marks)
    return out


def correction_body(
    conn: Connection,
    invoice: Issued,
    notes: list[Issued],
    k2: int,
    doc_format: int = FORMAT,
    checkpoint: bool = False,
) -> typed.Body | None:
    """The correction of `invoice` as known at K2 (in document format `doc_format`),
    or None when nothing differs."""
    billed = Billed.of(invoice, notes, _interims(conn, invoice))
    body = invoice.body
    fresh = invoicing.compute_typed(
        conn, body.customer_id, body.period.label, k2, doc_format, checkpoint=checkpoint
    )
    found = diff(billed.so_far, fresh.lines, fresh.tax)
    if found is None:
        return None
    note = typed.Body(
        kind=str(found.kind),
        customer_id=fresh.customer_id,
        customer_name=fresh.customer_name,
        currency=fresh.currency,
        timezone=fresh.timezone,
        period=fresh.period,
        subscriptions=fresh.subscriptions,
        lines=found.lines,
        subtotal=found.subtotal,
        tax_rate=fresh.tax_rate,
        tax=found.tax,
        credits=(),
        credits_applied=Decimal(0),
        total=found.total,
        corrects=invoice.number,
        reasons=tuple(reasons(conn, billed, k2, doc_format)),
        billed_cutoff_seq=billed.cutoff,
        cutoff_seq=k2,
        price_versions=fresh.price_versions,
        # the format, and from format 2 on the log's tree head at K2 (DESIGN §2)
        format=fresh.format,
        tree_head=fresh.tree_head,
    )
    return note


def recompute_note(conn: Connection, doc: Issued) -> typed.Body:
    """A correction as the store knew it at its cutoff (for verification)."""
    invoice = documents.get(conn, str(doc.body.corrects))
    seq = _doc_seq(conn, doc.number)
    body = correction_body(
        conn,
        invoice,
        notes_for(conn, invoice.number, before_seq=seq),
        int(doc.body.cutoff_seq),
        format_of(doc.body),
    )
    if body is None:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT, f"{doc.number}: nothing to correct at its cutoff"
        )
    return body


@dataclass
class RerateResult:
    issued: list[Issued] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def _invoices(conn: Connection, customer: str | None, label: str | None) -> list[Issued]:
    out = []
    for doc in documents.list_documents(conn, customer):
        if doc.kind != Kind.INVOICE or doc.status == Status.VOID:
            continue
        if doc.body.role_of == "interim":  # corrected through its period's final invoice
            continue
        if label is not None and doc.body.period.label != label:
            continue
        out.append(doc)
    return out


_BILLED_CUTOFF = text("SELECT MAX(cutoff_seq) FROM documents WHERE number = :n OR corrects = :n")


def _needs_rerate(conn: Connection, invoice: Issued) -> bool:
    """Whether anything that can change `invoice` was recorded after it was last billed.

    Late events, backfills, retractions and retroactive price versions leave a
    re-rating mark; a catalog change to the customer is a new customer row. A
    forced invoice was issued before its period closed, so on-time events may
    still have arrived since: it is always recomputed.
    """
    if invoice.forced:
        return True
    body = invoice.body
    k = int(conn.execute(_BILLED_CUTOFF, {"n": invoice.number}).scalar_one())
    return facts(conn).pending(
        body.customer_id,
        parse_rfc3339(body.period.start),
        parse_rfc3339(body.period.end),
        k,
    )


def rerate(
    store: Store,
    now_us: int,
    customer: str | None = None,
    period: str | None = None,
    reason: str | None = None,
) -> RerateResult:
    """Re-rate issued periods; safe to run on a schedule (idempotent)."""
    result = RerateResult()
    with store.read() as conn:
        invoices = _invoices(conn, customer, period)
        named = customer is not None and period is not None
        numbers = [d.number for d in invoices if named or reason or _needs_rerate(conn, d)]
    if customer and period and not numbers:
        raise MeterlineError(
            ErrorCode.DOCUMENT_NOT_FOUND, f"no issued invoice for {customer} in {period}"
        )
    for number in numbers:
        with store.write() as conn:
            invoice = documents.get(conn, number)
            if reason:
                p = invoice.body.period
                k = sequence.lock(conn)
                add_mark(
                    conn,
                    k + 1,
                    invoice.body.customer_id,
                    parse_rfc3339(p.start),
                    parse_rfc3339(p.end),
                    "manual",
                    reason,
                    0,
                    now_us,
                )
                sequence.advance(conn, k + 1)
                audit.record(conn, "rerate.mark", {"number": number, "reason": reason}, now_us)
            k2 = sequence.lock(conn)
            body = correction_body(conn, invoice, notes_for(conn, number), k2, checkpoint=True)
            if body is None:
                result.unchanged.append(number)
                continue
            period_ = Period(
                parse_rfc3339(body.period.start),
                parse_rfc3339(body.period.end),
                body.period.label,
            )
            result.issued.append(
                documents.append(
                    conn, Kind(body.kind), body, body_hash(body), period_, now_us, False
                )
            )
    if result.issued:  # the same public shape as `invoice show` (finance details)
        from meterline.services.finance import with_finance

        with store.read() as conn:
            result.issued = [with_finance(conn, d) for d in result.issued]
    return result
