"""`status`: where the watermarks are and when each open period closes (DESIGN §4, §7).

A period can be invoiced once it is *closed*: the global watermark (the least
event time reached by the active sources) has passed the end of the last
window the period covers plus the meter's allowed lateness. Before that,
`invoice issue` refuses with PERIOD_NOT_CLOSED. This view answers "why not
yet, and when" without computing any invoice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.billing.customers import Customer
from meterline.billing.periods import Period, month_of
from meterline.domain.timestamps import format_us
from meterline.metering import Meter, window_start
from meterline.metering.meter import format_duration
from meterline.metering.watermark import DEFAULT_IDLE_TIMEOUT_US, active_sources
from meterline.pricing.charges import Flat
from meterline.store import documents, sequence
from meterline.store.customer_catalog import load_customers
from meterline.store.database import Store
from meterline.store.meter_catalog import load_meters
from meterline.store.price_catalog import load_price_book
from meterline.store.window_index import current_watermark, load_sources

# Open periods listed per customer (the most recent ones); older ones are counted.
PERIODS_PER_CUSTOMER = 3

CLOSING_RULE = (
    "a period closes when the global watermark reaches the end of its last window "
    "plus the meter's allowed lateness; the global watermark is the least event time "
    "reached by the sources that sent something within the idle timeout"
)


def period_closes_at(period: Period, meters: list[Meter]) -> int:
    """When `period` is closed for usage of `meters` (flat fees close at its end)."""
    closing = period.end
    last = period.end - 1
    for m in meters:
        closing = max(
            closing, window_start(last, m.window_us) + m.window_us + m.allowed_lateness_us
        )
    return closing


@dataclass(frozen=True)
class OpenPeriod:
    customer_id: str
    period: Period
    closes_at: int
    watermark: int | None

    @property
    def closed(self) -> bool:
        return self.watermark is not None and self.watermark >= self.closes_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "period": self.period.label,
            "start": format_us(self.period.start),
            "end": format_us(self.period.end),
            "closes_at": format_us(self.closes_at),
            "closed": self.closed,
        }


def _book_meters(conn: Connection, customer: Customer, meters: dict[str, Meter]) -> list[Meter]:
    used: set[str] = set()
    for sub in customer.subscriptions:
        book = load_price_book(conn, sub.price_book)
        for version in book.versions:
            used.update(c.meter for c in version.charges if not isinstance(c, Flat))
    return [meters[code] for code in sorted(used) if code in meters]


def _open_periods(
    conn: Connection, customer: Customer, meters: list[Meter], upto: int, watermark: int | None
) -> tuple[list[OpenPeriod], int]:
    """The customer's most recent uninvoiced periods up to the one holding `upto`,
    and how many older uninvoiced periods were left out."""
    if not customer.subscriptions:
        return [], 0
    first = min(s.start for s in customer.subscriptions)
    found: list[OpenPeriod] = []
    older = 0
    period = month_of(upto, customer.timezone)
    while period.end > first:
        if customer.subscriptions_in(period.start, period.end) and (
            documents.invoice_for(conn, customer.id, period.label) is None
        ):
            if len(found) < PERIODS_PER_CUSTOMER:
                found.append(
                    OpenPeriod(customer.id, period, period_closes_at(period, meters), watermark)
                )
            else:
                older += 1
                if older > 1000:  # a store years behind: the count is enough
                    break
        period = month_of(period.start - 1, customer.timezone)
    return sorted(found, key=lambda p: p.period.start), older


def status(store: Store, now_us: int) -> dict[str, Any]:
    with store.read() as conn:
        k = sequence.current(conn)
        sources = load_sources(conn)
        watermark = current_watermark(conn, now_us)
        active = set(active_sources(sources, now_us))
        late = conn.execute(text("SELECT COUNT(*), MAX(received_at) FROM late_arrivals")).one()
        pending = conn.execute(text("SELECT COUNT(*) FROM rerate_marks")).scalar_one()
        meters = {m.code: m for m in load_meters(conn)}
        periods: list[OpenPeriod] = []
        older = 0
        upto = max(now_us, watermark or now_us)
        for customer in load_customers(conn):
            found, left_out = _open_periods(
                conn, customer, _book_meters(conn, customer, meters), upto, watermark
            )
            periods.extend(found)
            older += left_out
    return {
        "now": format_us(now_us),
        "knowledge_seq": k,
        "watermark": None if watermark is None else format_us(watermark),
        "idle_timeout": format_duration(DEFAULT_IDLE_TIMEOUT_US),
        "rule": CLOSING_RULE,
        "sources": [
            {
                "source": name,
                "watermark": format_us(st.watermark_us),
                "last_received": format_us(st.last_received_us),
                "active": name in active,
            }
            for name, st in sorted(sources.items())
        ],
        "late_events": int(late[0] or 0),
        "last_late_received": None if late[1] is None else format_us(int(late[1])),
        "rerate_marks": int(pending or 0),
        "open_periods": [p.to_dict() for p in periods],
        "older_open_periods": older,
    }
