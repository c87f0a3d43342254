"""Invoices: preview (a draft as known now) and issue (DESIGN §7).

Issuing one customer-period is one transaction holding the knowledge-sequence
lock: the cutoff K is the last seq, the body is computed from the store as
known at K, and number, chain link and document seq are taken in the same
transaction. Recomputing the body at K later reproduces it byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection

from meterline.billing.customers import Customer
from meterline.billing.document import Issued, Kind, Status, body_hash, draft_dict
from meterline.billing.invoice import SubscriptionUsage, assemble
from meterline.billing.periods import Period, month
from meterline.billing.usage import collect
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Event
from meterline.domain.timestamps import format_us
from meterline.metering import Meter, window_start
from meterline.pricing.charges import Flat
from meterline.store import documents, sequence
from meterline.store.customer_catalog import load_customer, load_customers
from meterline.store.database import Store
from meterline.store.meter_catalog import load_meters
from meterline.store.price_catalog import load_price_book
from meterline.store.window_index import current_watermark

_EVENTS = text(
    "SELECT e.seq, e.source, e.event_id, e.customer_id, e.event_type, e.event_time, e.properties, "
    "e.content_hash FROM events e WHERE e.customer_id = :c AND e.event_type IN :types "
    "AND e.event_time >= :lo AND e.event_time < :hi AND e.seq <= :k AND NOT EXISTS "
    "(SELECT 1 FROM retractions r WHERE r.source = e.source AND r.event_id = e.event_id AND r.seq <= :k) "
    "ORDER BY e.event_time, e.source, e.event_id"
).bindparams(bindparam("types", expanding=True))


def fetch_events(
    conn: Connection, customer: str, event_types: list[str], lo: int, hi: int, known_at: int
) -> Iterator[Event]:
    """The customer's events in [lo, hi) as known at K (retractions applied)."""
    if not event_types:
        return
    rows = conn.execute(
        _EVENTS, {"c": customer, "types": sorted(event_types), "lo": lo, "hi": hi, "k": known_at}
    )
    for r in rows:
        yield Event(r[1], r[2], r[3], r[4], int(r[5]), r[6], r[7])


@dataclass(frozen=True)
class Billing:
    """Everything an invoice is computed from, as known at K."""

    customer: Customer
    period: Period
    subscriptions: list[SubscriptionUsage]
    meters: dict[str, Meter]


def gather(conn: Connection, customer_id: str, label: str, known_at: int) -> Billing:
    customer = load_customer(conn, customer_id, known_at)
    period = month(label, customer.timezone)
    subs = customer.subscriptions_in(period.start, period.end)
    if not subs:
        raise MeterlineError(
            ErrorCode.NO_SUBSCRIPTION, f"customer {customer_id} has no subscription in {label}"
        )
    meters = {m.code: m for m in load_meters(conn, known_at)}
    out = []
    for sub, (lo, hi) in subs:
        book = load_price_book(conn, sub.price_book, known_at)
        segments = book.segments(lo, hi, known_at)
        used = sorted(
            {c.meter for s in segments for c in s.version.charges if not isinstance(c, Flat)}
        )
        missing = [code for code in used if code not in meters]
        if missing:
            raise MeterlineError(
                ErrorCode.UNKNOWN_METER, f"price book {book.code} uses unknown meter(s) {missing}"
            )
        sub_meters = [meters[code] for code in used]
        events = fetch_events(
            conn, customer.id, sorted({m.event_type for m in sub_meters}), lo, hi, known_at
        )
        usage = collect(events, sub_meters, [s.start for s in segments])
        out.append(SubscriptionUsage(sub, book, (lo, hi), tuple(segments), usage))
    return Billing(customer, period, out, meters)


def compute_body(conn: Connection, customer_id: str, label: str, known_at: int) -> dict[str, Any]:
    b = gather(conn, customer_id, label, known_at)
    spent = documents.credits_spent(conn, customer_id, known_at)
    return assemble(b.customer, b.period, b.subscriptions, known_at, spent)


def closes_at(b: Billing) -> int:
    """When the period is closed: every window it covers is final (DESIGN §7)."""
    closing = b.period.end
    last = b.period.end - 1
    for su in b.subscriptions:
        for charge in {c for s in su.segments for c in s.version.charges}:
            if isinstance(charge, Flat):
                continue
            m = b.meters[charge.meter]
            closing = max(
                closing, window_start(last, m.window_us) + m.window_us + m.allowed_lateness_us
            )
    return closing


def preview(store: Store, customer_id: str, label: str) -> dict[str, Any]:
    with store.read() as conn:
        k = sequence.current(conn)
        return draft_dict(compute_body(conn, customer_id, label, k))


@dataclass
class IssueResult:
    issued: list[Issued] = field(default_factory=list)
    already: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


def customers_for(store: Store, label: str) -> list[str]:
    """Customers with a subscription overlapping the period (in their timezone)."""
    with store.read() as conn:
        out = []
        for c in load_customers(conn):
            p = month(label, c.timezone)
            if c.subscriptions_in(p.start, p.end):
                out.append(c.id)
        return out


def issue(
    store: Store, label: str, now_us: int, customer: str | None = None, force: bool = False
) -> IssueResult:
    result = IssueResult()
    targets = [customer] if customer else customers_for(store, label)
    for cid in targets:
        try:
            issued = _issue_one(store, cid, label, now_us, force)
        except MeterlineError as exc:
            if exc.code != ErrorCode.PERIOD_NOT_CLOSED or customer is not None:
                raise
            result.refused.append((cid, exc.message))
            continue
        if isinstance(issued, str):
            result.already.append((cid, issued))
        else:
            result.issued.append(issued)
    return result


def _issue_one(
    store: Store, customer_id: str, label: str, now_us: int, force: bool
) -> Issued | str:
    with store.write() as conn:
        k = sequence.lock(conn)
        existing = documents.invoice_for(conn, customer_id, label)
        if existing is not None:
            return existing
        billing = gather(conn, customer_id, label, k)
        closing = closes_at(billing)
        watermark = current_watermark(conn, now_us)
        if not force and (watermark is None or watermark < closing):
            seen = "no events yet" if watermark is None else format_us(watermark)
            raise MeterlineError(
                ErrorCode.PERIOD_NOT_CLOSED,
                f"{label} for {customer_id} is not closed: the watermark is {seen}; the period "
                f"closes when it reaches {format_us(closing)} (use --force to issue anyway)",
                watermark=watermark,
                closes_at=closing,
            )
        spent = documents.credits_spent(conn, customer_id, k)
        body = assemble(billing.customer, billing.period, billing.subscriptions, k, spent)
        return documents.append(
            conn, Kind.INVOICE, body, body_hash(body), billing.period, now_us, force
        )


def show(store: Store, number: str) -> Issued:
    with store.read() as conn:
        return documents.get(conn, number)


def list_all(store: Store, customer: str | None = None) -> list[Issued]:
    with store.read() as conn:
        return documents.list_documents(conn, customer)


def set_status(store: Store, number: str, status: Status, reason: str, now_us: int) -> Status:
    with store.write() as conn:
        return documents.set_status(conn, number, status, reason, now_us)
