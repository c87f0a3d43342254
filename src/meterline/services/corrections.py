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
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing.document import Issued, Kind, Status, body_hash, money
from meterline.billing.periods import Period
from meterline.domain.canonical import dumps
from meterline.domain.decimals import exact_sum, fmt
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.store import audit, documents, sequence
from meterline.store.database import Store
from meterline.store.window_index import add_mark

LineKey = tuple[str, str, str]  # price book, charge, canonical dimensions


def line_key(line: dict[str, Any]) -> LineKey:
    return (line["price_book"], line["charge"], dumps(line["dimensions"]).decode())


def _dec(text_: str | None) -> Decimal:
    return Decimal(0) if text_ is None else Decimal(text_)


@dataclass
class Billed:
    """What has been billed for one customer-period so far."""

    invoice: Issued
    notes: list[Issued]
    quantity: dict[LineKey, Decimal] = field(default_factory=dict)
    amount: dict[LineKey, Decimal] = field(default_factory=dict)
    tax: Decimal = Decimal(0)
    cutoff: int = 0

    @classmethod
    def of(cls, invoice: Issued, notes: list[Issued]) -> Billed:
        b = cls(invoice, notes)
        for doc in [invoice, *notes]:
            for line in doc.body["lines"]:
                k = line_key(line)
                b.quantity[k] = b.quantity.get(k, Decimal(0)) + _dec(line.get("quantity"))
                b.amount[k] = b.amount.get(k, Decimal(0)) + _dec(line["amount"])
            b.tax += _dec(doc.body["tax"])
            b.cutoff = max(b.cutoff, int(doc.body["cutoff_seq"]))
        return b


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


def reasons(conn: Connection, billed: Billed, k2: int) -> list[str]:
    """What changed between the billed cutoff and K2, in words (deterministic)."""
    body = billed.invoice.body
    c, lo, hi = (
        body["customer_id"],
        parse_rfc3339(body["period"]["start"]),
        parse_rfc3339(body["period"]["end"]),
    )
    k1, number = billed.cutoff, billed.invoice.number
    params = {"c": c, "lo": lo, "hi": hi, "k1": k1, "k2": k2}
    out = []
    # A few facts since K1: walk them by seq, not the customer's whole period.
    plus = "+" if invoicing.seq_driven(conn.dialect.name, k1, k2) else ""
    late = conn.execute(
        text(
            "SELECT COUNT(*), SUM(CASE WHEN backfill THEN 1 ELSE 0 END) FROM events WHERE "
            f"{plus}customer_id = :c AND {plus}event_time >= :lo AND {plus}event_time < :hi "
            "AND seq > :k1 AND seq <= :k2"
        ),
        params,
    ).one()
    if int(late[0]):
        backfilled = int(late[1] or 0)
        extra = f" ({backfilled} of them backfilled)" if backfilled else ""
        out.append(f"{int(late[0])} events received after {number} was issued{extra}")
    retracted = conn.execute(
        text(
            "SELECT COUNT(*) FROM retractions r JOIN events e ON e.seq = r.event_seq WHERE e.customer_id = :c "
            "AND e.event_time >= :lo AND e.event_time < :hi AND r.seq > :k1 AND r.seq <= :k2"
        ),
        params,
    ).scalar_one()
    if int(retracted):
        out.append(f"{int(retracted)} events retracted")
    books = sorted({s["price_book"] for s in body.get("subscriptions", [])})
    if books:
        rows = conn.execute(
            text(
                "SELECT book_code, label, definition FROM price_versions WHERE seq > :k1 AND seq <= :k2 "
                "AND effective_from < :hi ORDER BY seq"
            ),
            params,
        ).all()
        from meterline.domain.events import decode_json

        for book, label, definition in rows:
            if book in books:
                why = decode_json(definition).get("reason")
                out.append(
                    f"price version {label} of {book} recorded retroactively"
                    + (f": {why}" if why else "")
                )
    changed = conn.execute(
        text("SELECT COUNT(*) FROM customers WHERE customer_id = :c AND seq > :k1 AND seq <= :k2"),
        params,
    ).scalar_one()
    if int(changed):
        out.append(f"customer {c}'s terms changed (new catalog version)")
    manual = conn.execute(
        text(
            "SELECT reason FROM rerate_marks WHERE customer_id = :c AND kind = 'manual' AND from_us < :hi "
            "AND to_us > :lo AND seq > :k1 AND seq <= :k2 ORDER BY seq"
        ),
        params,
    ).all()
    out.extend(f"re-rating requested: {r[0]}" for r in manual)
    return out


def correction_body(
    conn: Connection, invoice: Issued, notes: list[Issued], k2: int
) -> dict[str, Any] | None:
    """The correction of `invoice` as known at K2, or None when nothing differs."""
    billed = Billed.of(invoice, notes)
    body = invoice.body
    fresh = invoicing.compute_body(conn, body["customer_id"], body["period"]["label"], k2)
    currency = Currency(body["currency"])
    new_lines = {line_key(line): line for line in fresh["lines"]}
    keys = list(new_lines) + [k for k in billed.amount if k not in new_lines]
    lines = []
    for k in keys:
        new = new_lines.get(k)
        nq, na = (
            (_dec(new.get("quantity")), _dec(new["amount"])) if new else (Decimal(0), Decimal(0))
        )
        bq, ba = billed.quantity.get(k, Decimal(0)), billed.amount.get(k, Decimal(0))
        if nq == bq and na == ba:
            continue
        template = new or _billed_line(billed, k)
        lines.append(
            {
                "charge": template["charge"],
                "description": template["description"],
                "price_book": template["price_book"],
                "model": template["model"],
                "meter": template.get("meter"),
                "dimensions": template["dimensions"],
                "quantity": fmt(nq - bq),
                "unit_price": template.get("unit_price"),
                "amount": money(na - ba, currency),
                "billed_quantity": fmt(bq),
                "billed_amount": money(ba, currency),
                "new_quantity": fmt(nq),
                "new_amount": money(na, currency),
                "formula": new["formula"] if new else "no longer billed",
                "explanation": new["explanation"] if new else None,
                "usage": new.get("usage") if new else None,
            }
        )
    new_tax = _dec(fresh["tax"])
    tax_delta = new_tax - billed.tax
    if not lines and tax_delta == 0:
        return None
    for i, line in enumerate(lines, start=1):
        line["line"] = i
    subtotal = exact_sum([_dec(line["amount"]) for line in lines])
    total = subtotal + tax_delta
    kind = Kind.DEBIT_NOTE if total > 0 else Kind.CREDIT_NOTE
    return {
        "kind": str(kind),
        "customer_id": fresh["customer_id"],
        "customer_name": fresh["customer_name"],
        "currency": fresh["currency"],
        "timezone": fresh["timezone"],
        "period": fresh["period"],
        "subscriptions": fresh["subscriptions"],
        "lines": lines,
        "subtotal": money(subtotal, currency),
        "tax_rate": fresh["tax_rate"],
        "tax": money(tax_delta, currency),
        "credits": [],
        "credits_applied": money(Decimal(0), currency),
        "total": money(total, currency),
        "corrects": invoice.number,
        "reasons": reasons(conn, billed, k2),
        "billed_cutoff_seq": billed.cutoff,
        "cutoff_seq": k2,
        "price_versions": fresh["price_versions"],
    }


def _billed_line(billed: Billed, k: LineKey) -> dict[str, Any]:
    for doc in [billed.invoice, *billed.notes]:
        for line in doc.body["lines"]:
            if line_key(line) == k:
                return dict(line)
    raise AssertionError(k)


def recompute_note(conn: Connection, doc: Issued) -> dict[str, Any]:
    """A correction as the store knew it at its cutoff (for verification)."""
    invoice = documents.get(conn, doc.body["corrects"])
    seq = _doc_seq(conn, doc.number)
    body = correction_body(
        conn, invoice, notes_for(conn, invoice.number, before_seq=seq), int(doc.body["cutoff_seq"])
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
        if label is not None and doc.body["period"]["label"] != label:
            continue
        out.append(doc)
    return out


_PENDING = text(
    "SELECT 1 FROM rerate_marks WHERE customer_id = :c AND from_us < :hi AND to_us > :lo "
    "AND seq > :k UNION ALL SELECT 1 FROM customers WHERE customer_id = :c AND seq > :k"
)
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
    params = {
        "c": body["customer_id"],
        "lo": parse_rfc3339(body["period"]["start"]),
        "hi": parse_rfc3339(body["period"]["end"]),
        "k": k,
    }
    return conn.execute(_PENDING, params).first() is not None


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
                p = invoice.body["period"]
                k = sequence.lock(conn)
                add_mark(
                    conn,
                    k + 1,
                    invoice.body["customer_id"],
                    parse_rfc3339(p["start"]),
                    parse_rfc3339(p["end"]),
                    "manual",
                    reason,
                    0,
                    now_us,
                )
                sequence.advance(conn, k + 1)
                audit.record(conn, "rerate.mark", {"number": number, "reason": reason}, now_us)
            k2 = sequence.lock(conn)
            body = correction_body(conn, invoice, notes_for(conn, number), k2)
            if body is None:
                result.unchanged.append(number)
                continue
            period_ = Period(
                parse_rfc3339(body["period"]["start"]),
                parse_rfc3339(body["period"]["end"]),
                body["period"]["label"],
            )
            result.issued.append(
                documents.append(
                    conn, Kind(body["kind"]), body, body_hash(body), period_, now_us, False
                )
            )
    if result.issued:  # the same public shape as `invoice show` (finance details)
        from meterline.services.finance import with_finance

        with store.read() as conn:
            result.issued = [with_finance(conn, d) for d in result.issued]
    return result
