"""Invoices: preview (a draft as known now) and issue (DESIGN §7).

Usage is read from the bitemporal usage index (`services/measuring.py`);
documents of format 1 (issued before it) are recomputed by the legacy
raw-event path, `measure_legacy`, so they keep verifying.

Issuing one customer-period is one transaction holding the knowledge-sequence
lock: the cutoff K is the last seq, the body is computed from the store as
known at K, and number, chain link and document seq are taken in the same
transaction. Recomputing the body at K later reproduces it byte for byte.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from msgspec import structs
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from meterline.billing import body as typed
from meterline.billing.customers import Customer
from meterline.billing.document import (
    FORMAT,
    Issued,
    Kind,
    Status,
    body_hash,
    draft_dict,
)
from meterline.billing.invoice import SubscriptionUsage, assemble
from meterline.billing.periods import Period, label_year, period_for_label
from meterline.billing.usage import GroupUsage, Measurement, Row
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Event
from meterline.domain.timestamps import format_us
from meterline.metering import Meter, window_start
from meterline.pricing.charges import Flat
from meterline.pricing.pricebook import PriceBook, split_segments
from meterline.services import measuring
from meterline.store import documents, merkle, sequence
from meterline.store.customer_catalog import load_customer, load_customers
from meterline.store.database import Store, is_transient
from meterline.store.facts import facts
from meterline.store.meter_catalog import load_meters
from meterline.store.price_catalog import load_price_book
from meterline.store.window_index import current_watermark


def fetch_events(
    conn: Connection, customer: str, event_types: list[str], lo: int, hi: int, known_at: int
) -> Iterator[Event]:
    """The customer's events in [lo, hi) as known at K (retractions applied), in time order."""
    for _, ev in facts(conn).events(
        known_at, customer=customer, event_types=event_types, lo=lo, hi=hi, ordered=True
    ):
        yield ev


def usage_rows(
    conn: Connection,
    customer: str,
    event_types: list[str],
    lo: int,
    hi: int,
    known_at: int,
    after: int | None = None,
) -> list[Row]:
    """The rows `Measurement` reads (see `Facts.measure_rows`)."""
    return facts(conn).measure_rows(customer, event_types, lo, hi, known_at, after)


# --- measured usage, kept for large spans ------------------------------------
#
# Usage as known at K never changes (facts are only appended), and usage as
# known at K2 > K is the usage at K plus the events learnt in (K, K2] — unless an
# event was retracted in between, which this cache answers by measuring again.
# So a large customer's measurement is kept per process and caught up from the
# log instead of re-read: re-rating after a late event reads the late events,
# not the whole period. The key holds everything the measurement depends on
# (customer, span, meter definitions, price segment starts); the store is the
# engine. An entry is kept only once the transaction that measured it commits:
# a rolled-back transaction may have counted seq values that will be reused.

_MEASURED_MIN_EVENTS = 50_000  # smaller spans are cheap to read again
_MEASURED_ENTRIES = 4
_measured: weakref.WeakKeyDictionary[Engine, OrderedDict[tuple[Any, ...], tuple[int, Measurement]]]
_measured = weakref.WeakKeyDictionary()
_measured_lock = threading.Lock()


def _retracted_since(conn: Connection, customer: str, k1: int, k2: int) -> bool:
    return facts(conn).retracted_between(customer, k1, k2) > 0


def _keep(conn: Connection, key: tuple[Any, ...], known_at: int, m: Measurement) -> None:
    engine = conn.engine

    def keep(_: Connection) -> None:
        with _measured_lock:
            entries = _measured.setdefault(engine, OrderedDict())
            current = entries.get(key)
            if current is None or current[0] <= known_at:
                entries[key] = (known_at, m)
                entries.move_to_end(key)
            while len(entries) > _MEASURED_ENTRIES:
                entries.popitem(last=False)

    event.listen(conn, "commit", keep, once=True)


def measure_legacy(
    conn: Connection,
    customer: str,
    meters: list[Meter],
    span: tuple[int, int],
    boundaries: list[int],
    known_at: int,
) -> dict[tuple[str, str], GroupUsage]:
    """Format-1 usage (LEGACY: documents issued before the usage index, which
    carry an events digest per line): every raw event of the span as known at
    K, per segment. Kept so those documents keep verifying bit for bit."""
    lo, hi = span
    types = sorted({m.event_type for m in meters})
    key = (customer, tuple(meters), lo, hi, tuple(boundaries))
    with _measured_lock:
        entries = _measured.get(conn.engine)
        found = entries.pop(key, None) if entries is not None else None
    if found is not None:
        k1, m = found
        if k1 <= known_at and not _retracted_since(conn, customer, k1, known_at):
            if k1 < known_at:
                m.add(usage_rows(conn, customer, types, lo, hi, known_at, after=k1))
            _keep(conn, key, known_at, m)
            return m.groups()
        if k1 > known_at:  # an older K (verification): leave the entry as it was
            _keep(conn, key, k1, m)
    m = Measurement(meters, boundaries)
    m.add(usage_rows(conn, customer, types, lo, hi, known_at))
    if m.events >= _MEASURED_MIN_EVENTS:
        _keep(conn, key, known_at, m)
    return m.groups()


# Parsed catalog facts, keyed by what was read from the store: stored meters and
# price versions never change once recorded, so equal rows parse to equal
# objects, whichever store or K they came from. Bounded; cleared when full.
_CACHE_SIZE = 256
_meter_cache: dict[tuple[str, ...], list[Meter]] = {}
_book_cache: dict[tuple[Any, ...], PriceBook] = {}


def _meters_at(conn: Connection, known_at: int) -> list[Meter]:
    key = tuple(facts(conn).meter_definitions(known_at))
    found = _meter_cache.get(key)
    if found is None:
        found = load_meters(conn, known_at)
        if len(_meter_cache) >= _CACHE_SIZE:
            _meter_cache.clear()
        _meter_cache[key] = found
    return found


def _book_at(conn: Connection, code: str, known_at: int) -> PriceBook:
    port = facts(conn)
    book = port.price_book_header(code)
    if book is None:
        return load_price_book(conn, code, known_at)  # raises the usual error
    key = (code, book[0], book[1], tuple(port.price_version_hashes(code, known_at)))
    found = _book_cache.get(key)
    if found is None:
        found = load_price_book(conn, code, known_at)
        if len(_book_cache) >= _CACHE_SIZE:
            _book_cache.clear()
        _book_cache[key] = found
    return found


@dataclass(frozen=True)
class Billing:
    """Everything an invoice is computed from, as known at K."""

    customer: Customer
    period: Period
    subscriptions: list[SubscriptionUsage]
    meters: dict[str, Meter]


def gather(
    conn: Connection,
    customer_id: str,
    label: str,
    known_at: int,
    fmt: int = FORMAT,
    raw: bool = False,
    checkpoint: bool = False,
) -> Billing:
    """What the invoice is computed from, as known at K. ``raw`` measures format-2
    usage from raw events instead of the index (the reference the index is tested
    against; same result)."""
    customer = load_customer(conn, customer_id, known_at)
    period = period_for_label(label, customer.cycles())
    subs = customer.subscriptions_in(period.start, period.end)
    if not subs:
        raise MeterlineError(
            ErrorCode.NO_SUBSCRIPTION, f"customer {customer_id} has no subscription in {label}"
        )
    meters = {m.code: m for m in _meters_at(conn, known_at)}
    out = []
    for sub, (lo, hi) in subs:
        book = _book_at(conn, sub.price_book, known_at)
        trial_end = sub.trial_end(customer.timezone)  # a boundary: the trial is billed apart
        segments = split_segments(book.segments(lo, hi, known_at), trial_end)
        used = sorted(
            {c.meter for s in segments for c in s.version.charges if not isinstance(c, Flat)}
        )
        missing = [code for code in used if code not in meters]
        if missing:
            raise MeterlineError(
                ErrorCode.UNKNOWN_METER, f"price book {book.code} uses unknown meter(s) {missing}"
            )
        sub_meters = [meters[code] for code in used]
        boundaries = [s.start for s in segments]
        if fmt >= 2:
            usage = measuring.measure(
                conn,
                customer.id,
                sub_meters,
                (lo, hi),
                boundaries,
                known_at,
                raw=raw,
                checkpoint=checkpoint,
            )
        else:
            usage = measure_legacy(conn, customer.id, sub_meters, (lo, hi), boundaries, known_at)
        out.append(SubscriptionUsage(sub, book, (lo, hi), tuple(segments), usage))
    return Billing(customer, period, out, meters)


def compute_typed(
    conn: Connection,
    customer_id: str,
    label: str,
    known_at: int,
    fmt: int = FORMAT,
    raw: bool = False,
    checkpoint: bool = False,
) -> typed.Body:
    """The invoice body as known at K, in document format `fmt` (see `format_of`)."""
    b = gather(conn, customer_id, label, known_at, fmt, raw, checkpoint)
    spent = documents.credits_spent(conn, customer_id, known_at)
    return finish_body(
        conn, assemble(b.customer, b.period, b.subscriptions, known_at, spent), known_at, fmt
    )


def compute_body(
    conn: Connection,
    customer_id: str,
    label: str,
    known_at: int,
    fmt: int = FORMAT,
    raw: bool = False,
    checkpoint: bool = False,
) -> dict[str, Any]:
    """`compute_typed` as plain JSON data (the edge: hashing, previews, comparisons)."""
    return typed.encode(compute_typed(conn, customer_id, label, known_at, fmt, raw, checkpoint))


def finish_body(conn: Connection, body: typed.Body, k: int, fmt: int) -> typed.Body:
    """Mark a computed body with its format; from format 2 on, record the log's tree head
    at the cutoff, so the document commits to every fact before it (DESIGN §2)."""
    if fmt < 2:
        return body  # format 1 bodies carry no format field, as issued
    head = merkle.head(conn, k)
    tree_head = typed.TreeHead(size=head.size, root=head.root.hex())
    return structs.replace(body, format=fmt, tree_head=tree_head)


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
    from meterline.services.finance import details

    with store.read() as conn:
        k = sequence.current(conn)
        body = compute_typed(conn, customer_id, label, k)
        draft = draft_dict(typed.encode(body))
        draft["finance"] = details(conn, body, None)
        return draft


@dataclass
class IssueResult:
    issued: list[Issued] = field(default_factory=list)
    already: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    # Customers that could not be invoiced for another reason (a bad price,
    # an amount out of range, ...): (customer_id, code, message). The run goes
    # on for the others; callers report these and exit non-zero.
    failed: list[tuple[str, str, str]] = field(default_factory=list)


def customers_for(store: Store, label: str) -> list[str]:
    """Customers with a subscription overlapping the period (in their timezone)."""
    label_year(label)  # a malformed label is an error, not "no customers"
    with store.read() as conn:
        out = []
        for c in load_customers(conn):
            try:
                p = period_for_label(label, c.cycles())
            except MeterlineError:
                continue  # no period of that label in this customer's billing cycles
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
            if customer is not None or exc.code == ErrorCode.STORE_UNAVAILABLE:
                raise
            if exc.code == ErrorCode.PERIOD_NOT_CLOSED:
                result.refused.append((cid, exc.message))
            else:
                result.failed.append((cid, str(exc.code), exc.message))
            continue
        except Exception as exc:
            if is_transient(exc):
                raise
            message = f"{cid} cannot be invoiced for {label}: {type(exc).__name__}: {exc}"[:500]
            if customer is not None:
                raise MeterlineError(ErrorCode.INVOICE_FAILED, message) from exc
            result.failed.append((cid, str(ErrorCode.INVOICE_FAILED), message))
            continue
        if isinstance(issued, str):
            result.already.append((cid, issued))
        else:
            result.issued.append(issued)
    if result.issued:
        from meterline.services.finance import with_finance

        with store.read() as conn:
            result.issued = [with_finance(conn, d) for d in result.issued]
    return result


def _issue_one(
    store: Store, customer_id: str, label: str, now_us: int, force: bool
) -> Issued | str:
    with store.write() as conn:
        k = sequence.lock(conn)
        existing = documents.invoice_for(conn, customer_id, label)
        if existing is not None:
            return existing
        body, period = invoice_body(conn, customer_id, label, k, now_us, force, checkpoint=True)
        return documents.append(conn, Kind.INVOICE, body, body_hash(body), period, now_us, force)


def invoice_body(
    conn: Connection,
    customer_id: str,
    label: str,
    k: int,
    now_us: int,
    force: bool,
    checkpoint: bool = False,
) -> tuple[typed.Body, Period]:
    """The body of the invoice to issue at cutoff k (refused while the period is open).
    Shared with the split invoice run (services/invoice_run.py). `checkpoint` only in a
    write transaction holding the knowledge lock at k (usage index checkpoints)."""
    billing = gather(conn, customer_id, label, k, checkpoint=checkpoint)
    closing = closes_at(billing)
    watermark = current_watermark(conn, now_us)
    if not force and (watermark is None or watermark < closing):
        seen = "no events yet" if watermark is None else format_us(watermark)
        raise MeterlineError(
            ErrorCode.PERIOD_NOT_CLOSED,
            f"{label} for {customer_id} is not closed: the watermark is {seen}; the period "
            f"closes when it reaches {format_us(closing)} (the end of its last window plus "
            "the allowed lateness)",
            watermark=None if watermark is None else format_us(watermark),
            closes_at=format_us(closing),
        )
    spent = documents.credits_spent(conn, customer_id, k)
    body = finish_body(
        conn, assemble(billing.customer, billing.period, billing.subscriptions, k, spent), k, FORMAT
    )
    return body, billing.period


def show(store: Store, number: str) -> Issued:
    """One issued document, with its finance details (seller, dates, terms)."""
    from meterline.services.finance import with_finance

    with store.read() as conn:
        return with_finance(conn, documents.get(conn, number))


def list_all(store: Store, customer: str | None = None) -> list[Issued]:
    with store.read() as conn:
        return documents.list_documents(conn, customer)


def set_status(store: Store, number: str, status: Status, reason: str, now_us: int) -> Status:
    with store.write() as conn:
        return documents.set_status(conn, number, status, reason, now_us)
