"""Invoices: preview (a draft as known now) and issue (DESIGN §7).

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

from sqlalchemy import bindparam, event, text
from sqlalchemy.engine import Connection, Engine

from meterline.billing.customers import Customer
from meterline.billing.document import Issued, Kind, Status, body_hash, draft_dict
from meterline.billing.invoice import SubscriptionUsage, assemble
from meterline.billing.periods import Period, month
from meterline.billing.usage import GroupUsage, Measurement, Row
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Event
from meterline.domain.timestamps import format_us
from meterline.metering import Meter, window_start
from meterline.pricing.charges import Flat
from meterline.pricing.pricebook import PriceBook
from meterline.store import documents, sequence
from meterline.store.customer_catalog import load_customer, load_customers
from meterline.store.database import Store, is_transient
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


def _usage_sql(dialect: str, types: int) -> str:
    """`_EVENTS` for the measuring path: only the columns it reads, no ORDER BY
    (measuring is order-independent), in the driver's parameter style."""

    def p(name: str) -> str:
        return f"%({name})s" if dialect == "postgresql" else f":{name}"

    marks = ", ".join(p(f"t{i}") for i in range(types))
    return (
        "SELECT e.source, e.event_id, e.event_type, e.event_time, e.properties FROM events e "
        f"WHERE e.customer_id = {p('c')} AND e.event_type IN ({marks}) "
        f"AND e.event_time >= {p('lo')} AND e.event_time < {p('hi')} AND e.seq <= {p('k')} "
        "AND NOT EXISTS (SELECT 1 FROM retractions r WHERE r.source = e.source "
        f"AND r.event_id = e.event_id AND r.seq <= {p('k')})"
    )


# Up to this many facts learnt since K1, reading "what is new" walks the seq
# index (a few rows) rather than the customer's whole span in the usage index.
# SQLite has no statistics to choose by itself; PostgreSQL does.
SEQ_DRIVEN_MAX = 50_000


def seq_driven(dialect: str, k1: int, k2: int) -> bool:
    return dialect == "sqlite" and k2 - k1 <= SEQ_DRIVEN_MAX


def _since_sql(dialect: str, types: int, by_seq: bool) -> str:
    """`_usage_sql` restricted to seq > :k1."""
    sql = _usage_sql(dialect, types)
    p = "%(k1)s" if dialect == "postgresql" else ":k1"
    if by_seq:  # unary + keeps SQLite off the (customer, type, time) index
        sql = sql.replace("WHERE e.customer_id", "WHERE +e.customer_id")
    return sql + f" AND e.seq > {p}"


def usage_rows(
    conn: Connection,
    customer: str,
    event_types: list[str],
    lo: int,
    hi: int,
    known_at: int,
    after: int | None = None,
) -> list[Row]:
    """The rows `Measurement` reads: the same events as `fetch_events`, read
    through the driver's cursor (no per-row ORM objects); with `after`, only
    those with seq > after."""
    if not event_types:
        return []
    params: dict[str, Any] = {"c": customer, "lo": lo, "hi": hi, "k": known_at}
    params.update({f"t{i}": t for i, t in enumerate(sorted(event_types))})
    if after is None:
        sql = _usage_sql(conn.dialect.name, len(event_types))
    else:
        by_seq = seq_driven(conn.dialect.name, after, known_at)
        sql, params["k1"] = _since_sql(conn.dialect.name, len(event_types), by_seq), after
    raw = conn.connection.driver_connection
    cur = raw.cursor()  # type: ignore[union-attr]
    try:
        cur.execute(sql, params)
        return list(cur.fetchall())
    finally:
        cur.close()


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
    row = conn.execute(
        text(
            "SELECT 1 FROM retractions r JOIN events e ON e.seq = r.event_seq "
            "WHERE r.seq > :k1 AND r.seq <= :k2 AND e.customer_id = :c LIMIT 1"
        ),
        {"k1": k1, "k2": k2, "c": customer},
    ).first()
    return row is not None


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


def measure(
    conn: Connection,
    customer: str,
    meters: list[Meter],
    span: tuple[int, int],
    boundaries: list[int],
    known_at: int,
) -> dict[tuple[str, str], GroupUsage]:
    """Usage of `meters` for the customer over `span` as known at K, per segment."""
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
    rows = conn.execute(
        text("SELECT definition FROM meters WHERE seq <= :k ORDER BY seq"), {"k": known_at}
    ).all()
    key = tuple(str(r[0]) for r in rows)
    found = _meter_cache.get(key)
    if found is None:
        found = load_meters(conn, known_at)
        if len(_meter_cache) >= _CACHE_SIZE:
            _meter_cache.clear()
        _meter_cache[key] = found
    return found


def _book_at(conn: Connection, code: str, known_at: int) -> PriceBook:
    book = conn.execute(
        text("SELECT currency, rounding FROM price_books WHERE code = :c"), {"c": code}
    ).first()
    versions = conn.execute(
        text(
            "SELECT seq, content_hash FROM price_versions WHERE book_code = :c AND seq <= :k "
            "ORDER BY seq"
        ),
        {"c": code, "k": known_at},
    ).all()
    if book is None:
        return load_price_book(conn, code, known_at)  # raises the usual error
    key = (code, str(book[0]), str(book[1]), tuple((int(q), str(h)) for q, h in versions))
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


def gather(conn: Connection, customer_id: str, label: str, known_at: int) -> Billing:
    customer = load_customer(conn, customer_id, known_at)
    period = month(label, customer.timezone)
    subs = customer.subscriptions_in(period.start, period.end)
    if not subs:
        raise MeterlineError(
            ErrorCode.NO_SUBSCRIPTION, f"customer {customer_id} has no subscription in {label}"
        )
    meters = {m.code: m for m in _meters_at(conn, known_at)}
    out = []
    for sub, (lo, hi) in subs:
        book = _book_at(conn, sub.price_book, known_at)
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
        usage = measure(
            conn, customer.id, sub_meters, (lo, hi), [s.start for s in segments], known_at
        )
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
    # Customers that could not be invoiced for another reason (a bad price,
    # an amount out of range, ...): (customer_id, code, message). The run goes
    # on for the others; callers report these and exit non-zero.
    failed: list[tuple[str, str, str]] = field(default_factory=list)


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
