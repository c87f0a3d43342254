"""The console's one door into the services: every read and every action it takes.

The pages never touch SQL or a service directly; they call these functions,
so when a service changes shape (usage index, invoice computation, proofs,
quarantine) only this module needs adapting. Every function is blocking and
runs in a worker thread; actions run `acting_as` the session's actor so the
audit trail names the person's key, e.g. "console:admin#1".
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from meterline.api.catalog_routes import list_customers, read_catalog, show_customer
from meterline.api.context import StoreHandle
from meterline.api.ingesting import ingest_native
from meterline.api.quarantine_routes import read_page
from meterline.billing import body as typed
from meterline.billing.document import Issued, Kind
from meterline.billing.invoice import SubscriptionUsage
from meterline.billing.periods import month_of
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import DEFAULT_SOURCE
from meterline.domain.timestamps import US_PER_HOUR, format_us, parse_rfc3339
from meterline.ingest.service import IngestOptions, IngestReport
from meterline.metering import window_start
from meterline.services import corrections, invoicing, overview
from meterline.services.audit import acting_as, entries
from meterline.services.explain import explain as explain_document
from meterline.services.ledger import balances as ledger_balances
from meterline.services.usage import query_usage
from meterline.store import audit as audit_store
from meterline.store import sequence
from meterline.store.customer_catalog import load_customers
from meterline.store.meter_catalog import load_meters
from meterline.store.price_catalog import load_price_book

US_PER_DAY = 24 * US_PER_HOUR
REPLAY_ACTION = "console.quarantine.replay"


# --- overview -------------------------------------------------------------------


def overview_data(handle: StoreHandle, now_us: int, days: int = 21) -> dict[str, Any]:
    store = handle.ready_store()
    hi = (now_us // US_PER_DAY + 1) * US_PER_DAY
    lo = hi - days * US_PER_DAY
    with store.read() as conn:
        totals = overview.ingest_totals(conn)
        buckets = overview.ingest_buckets(conn, lo, hi, US_PER_DAY)
        marks = overview.watermarks(conn, now_us)
        late = overview.late_arrivals(conn)
        quarantined = overview.quarantine_count(conn)
        closing = _closing_periods(conn, marks["global_us"] or now_us)
        seq = sequence.current(conn)
    reconciles = entries(store, 1, "reconcile")
    return {
        "totals": totals,
        "buckets": buckets,
        "watermarks": marks,
        "late": late,
        "quarantined": quarantined,
        "closing": closing,
        "last_reconcile": reconciles[-1] if reconciles else None,
        "seq": seq,
    }


def _closing_periods(conn: Any, at_us: int, limit: int = 8) -> list[dict[str, Any]]:
    """The periods open at `at_us` (the watermark) and when each closes, one row per
    timezone and set of price books (customers sharing both close together)."""
    meters = {m.code: m for m in load_meters(conn)}
    k = sequence.current(conn)
    groups: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    found: dict[tuple[str, str, tuple[str, ...]], Any] = {}
    for c in load_customers(conn):
        period = month_of(at_us, c.timezone)
        subs = c.subscriptions_in(period.start, period.end)
        if not subs:
            continue
        key = (period.label, c.timezone, tuple(sorted({s.price_book for s, _ in subs})))
        groups.setdefault(key, []).append(c.id)
        if key not in found:
            found[key] = (c, period, subs)
    books: dict[str, Any] = {}
    out = []
    for key, ids in groups.items():
        customer, period, subs = found[key]
        usage = []
        try:
            for sub, (lo, hi) in subs:
                book = books.get(sub.price_book) or load_price_book(conn, sub.price_book, k)
                books[sub.price_book] = book
                usage.append(SubscriptionUsage(sub, book, (lo, hi), book.segments(lo, hi, k), {}))
            closes = invoicing.closes_at(invoicing.Billing(customer, period, usage, meters))
        except MeterlineError:
            continue
        out.append(
            {
                "period": period.label,
                "timezone": key[1],
                "price_books": list(key[2]),
                "customers": len(ids),
                "closes_at": format_us(closes),
                "closes_us": closes,
            }
        )
    out.sort(key=lambda r: (r["closes_us"], r["timezone"]))
    return out[:limit]


# --- customers ------------------------------------------------------------------


def find_customers(handle: StoreHandle, q: str) -> list[dict[str, Any]]:
    needle = q.strip().lower()
    rows = list_customers(handle)
    if needle:
        rows = [c for c in rows if needle in c["id"].lower() or needle in c["name"].lower()]
    return rows


def customer(handle: StoreHandle, customer_id: str) -> dict[str, Any]:
    return show_customer(handle, customer_id)


def meters_of(handle: StoreHandle, customer_def: dict[str, Any]) -> list[str]:
    """The meters the customer's price books charge for (charts, in book order)."""
    store = handle.ready_store()
    codes: list[str] = []
    with store.read() as conn:
        for sub in customer_def["subscriptions"]:
            book = load_price_book(conn, sub["price_book"])
            for version in book.versions:
                for charge in version.charges:
                    meter = getattr(charge, "meter", None)
                    if meter and meter not in codes:
                        codes.append(meter)
    return codes


def usage_series(
    handle: StoreHandle, customer_id: str, meter: str, lo: int, hi: int, now_us: int
) -> dict[str, Any]:
    """Usage per day (or per meter window when a day is not a multiple of it)."""
    store = handle.ready_store()
    with store.read() as conn:
        m = {x.code: x for x in load_meters(conn)}.get(meter)
        size = US_PER_DAY if m is not None and US_PER_DAY % m.window_us == 0 else None
        step = size or (m.window_us if m else US_PER_DAY)
        lo, hi = window_start(lo, step), window_start(hi + step - 1, step)
        return query_usage(
            conn,
            customer=customer_id,
            meter_code=meter,
            from_us=lo,
            to_us=hi,
            now_us=now_us,
            window_us=size,
        )


def line_windows(
    handle: StoreHandle, doc: dict[str, Any], line: dict[str, Any], now_us: int
) -> dict[str, Any]:
    """The line's meter windows over the period, as the usage index knows them now."""
    store = handle.ready_store()
    p = doc["period"]
    with store.read() as conn:
        meter = {x.code: x for x in load_meters(conn)}[line["meter"]]
        size = meter.window_us
        lo = window_start(parse_rfc3339(p["start"]), size)
        hi = window_start(parse_rfc3339(p["end"]) + size - 1, size)
        usage = query_usage(
            conn,
            customer=doc["customer_id"],
            meter_code=meter.code,
            from_us=lo,
            to_us=hi,
            now_us=now_us,
        )
    wanted = line.get("dimensions") or {}
    usage["windows"] = [
        w for w in usage["windows"] if all(w["dimensions"].get(k) == v for k, v in wanted.items())
    ]
    return usage


def running_bill(handle: StoreHandle, customer_id: str, label: str) -> dict[str, Any]:
    return invoicing.preview(handle.ready_store(), customer_id, label)


def open_period(customer_def: dict[str, Any], now_us: int) -> str:
    return month_of(now_us, customer_def["timezone"]).label


def balances(handle: StoreHandle, customer_id: str) -> list[dict[str, Any]]:
    return ledger_balances(handle.ready_store(), customer_id)


# --- documents ------------------------------------------------------------------


def documents(handle: StoreHandle, customer_id: str | None = None) -> list[Issued]:
    return invoicing.list_all(handle.ready_store(), customer_id)


def document(handle: StoreHandle, number: str) -> Issued:
    return invoicing.show(handle.ready_store(), number)


def chain(handle: StoreHandle, invoice: Issued) -> list[Issued]:
    """The credit and debit notes correcting `invoice`, void ones included, oldest first."""
    if invoice.kind != Kind.INVOICE:
        return []
    return [
        d for d in documents(handle, invoice.body.customer_id) if d.body.corrects == invoice.number
    ]


def explain(
    handle: StoreHandle, number: str, line: int, events: bool, limit: int, offset: int
) -> dict[str, Any]:
    """A line, or a page of its events; a page reads only up to its last event (the
    total is the line's event count; `meterline explain --events` recounts them all)."""
    store = handle.ready_store()
    return explain_document(store, number, line, events, limit, offset, count=not events)


def proof(handle: StoreHandle, number: str, event_id: str, source: str | None) -> dict[str, Any]:
    """An event's inclusion proof against the document's tree head (services/proofs.py)."""
    from meterline.services.proofs import prove

    return prove(handle.ready_store(), number, event_id, source)


def rerate_preview(handle: StoreHandle, number: str) -> dict[str, Any] | None:
    """The note re-rating `number` would issue now, or None when nothing differs."""
    store = handle.ready_store()
    with store.read() as conn:
        invoice = invoicing.show(store, number)
        if invoice.kind != Kind.INVOICE:
            raise MeterlineError(
                ErrorCode.INVALID_ARGUMENT, f"{number} is a correction; re-rate its invoice"
            )
        k = sequence.current(conn)
        note = corrections.correction_body(conn, invoice, corrections.notes_for(conn, number), k)
        return None if note is None else typed.encode(note)  # the template shows JSON text


def rerate_issue(
    handle: StoreHandle, number: str, reason: str | None, now_us: int, actor: str
) -> list[Issued]:
    store = handle.ready_store()
    invoice = invoicing.show(store, number)
    if invoice.kind != Kind.INVOICE:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT, f"{number} is a correction; re-rate its invoice"
        )
    with acting_as(actor):
        result = corrections.rerate(
            store,
            now_us,
            invoice.body.customer_id,
            invoice.body.period.label,
            reason,
        )
    return result.issued


# --- quarantine -----------------------------------------------------------------


def quarantine_page(handle: StoreHandle, after: int, limit: int) -> dict[str, Any]:
    return read_page(handle, after, limit)


def quarantine_entry(handle: StoreHandle, entry_id: int) -> dict[str, Any] | None:
    with handle.ready_store().read() as conn:
        return overview.quarantine_entry(conn, entry_id)


def replays(handle: StoreHandle) -> dict[int, dict[str, Any]]:
    """Quarantine id -> its latest console replay (from the audit trail)."""
    out: dict[int, dict[str, Any]] = {}
    for row in entries(handle.ready_store(), None, REPLAY_ACTION):
        out[int(row["details"]["quarantine_id"])] = row
    return out


@dataclass(frozen=True)
class Replay:
    report: IngestReport
    entry_id: int


def replay(handle: StoreHandle, entry_id: int, raw: bytes, now_us: int, actor: str) -> Replay:
    """Ingest the fixed input as its source, then note the replay in the audit trail.

    The ingest batch carries its own audit row (origin names the entry); the
    replay row links the entry to the outcome so the quarantine page can show
    which entries were fixed.
    """
    entry = quarantine_entry(handle, entry_id)
    if entry is None:
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"no quarantined entry {entry_id}")
    options = IngestOptions(
        source=entry["source"] or DEFAULT_SOURCE, origin=f"console:quarantine#{entry_id}"
    )
    with acting_as(actor):
        report = ingest_native(handle, raw, "application/json", options)
        record(
            handle,
            REPLAY_ACTION,
            {
                "quarantine_id": entry_id,
                "accepted": report.accepted,
                "duplicates": report.duplicates,
                "rejected": report.rejected,
                "first_seq": report.first_seq,
            },
            now_us,
            actor,
        )
    return Replay(report, entry_id)


# --- catalog and audit ----------------------------------------------------------


def price_books(handle: StoreHandle) -> list[dict[str, Any]]:
    books: list[dict[str, Any]] = read_catalog(handle)["price_books"]
    return books


def audit_rows(handle: StoreHandle, limit: int, action: str | None) -> list[dict[str, Any]]:
    return entries(handle.ready_store(), limit, action)


def record(
    handle: StoreHandle, action: str, details: dict[str, Any], now_us: int, actor: str
) -> None:
    """An audit row for a console action that changes nothing else (login, share)."""
    store = handle.ready_store()
    with acting_as(actor), store.write() as conn:
        audit_store.record(conn, action, details, now_us)


def decimal(text_: str | None) -> Decimal:
    return Decimal(0) if text_ in (None, "") else Decimal(str(text_))
