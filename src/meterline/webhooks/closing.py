"""When a customer-period closes, for period.closed (docs/SEMANTICS.md, "Webhooks").

Rule: a period closes at the instant C = max(period end, the end of the window
holding the period's last instant plus the allowed lateness, over every meter
in the catalog). Every meter, not only the ones the customer's price book
charges, so C is never earlier than the instant `invoice issue` accepts the
period (services/invoicing.closes_at): a subscriber told "closed" can issue.
period.closed is emitted once per customer-period whose C the global watermark
reaches, for customers with a subscription overlapping the period. Periods are each
subscription's billing cycle's (month, quarter, year, week; calendar or anniversary).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from meterline.billing.customers import Customer
from meterline.billing.periods import Period
from meterline.domain.timestamps import US_PER_HOUR, from_datetime, to_datetime
from meterline.metering import Meter, window_start

# Local midnights are within this much of the UTC midnight of the same date.
_ZONE_SPREAD_US = 14 * US_PER_HOUR


def extra_us(meters: Iterable[Meter], end: int) -> int:
    """How long after `end` the period closes (window alignment plus lateness)."""
    last = end - 1
    out = 0
    for m in meters:
        out = max(out, window_start(last, m.window_us) + m.window_us + m.allowed_lateness_us - end)
    return out


def closes_at(period: Period, meters: Iterable[Meter]) -> int:
    return period.end + extra_us(meters, period.end)


def max_extra_us(meters: Iterable[Meter]) -> int:
    """An upper bound of extra_us over any period end."""
    return max((m.window_us + m.allowed_lateness_us for m in meters), default=0)


def _next_month_start(t_us: int) -> int:
    d = to_datetime(t_us).astimezone(UTC)
    year, month = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return from_datetime(datetime(year, month, 1, tzinfo=UTC))


def may_close(after: int, through: int, max_extra: int, any_day: bool = False) -> bool:
    """Cheap test run on every watermark advance: can any period close in (after, through]?
    Month, quarter and year periods (calendar anchor) end at a local midnight on the 1st
    of a month, within 14 hours of that date's UTC midnight. Weekly and anniversary
    periods can end on any day (`any_day`: some customer has one): always look."""
    if any_day:
        return True
    return _next_month_start(after - max_extra - _ZONE_SPREAD_US) <= through + _ZONE_SPREAD_US


def due(
    customers: Iterable[Customer], meters: list[Meter], after: int | None, through: int
) -> Iterator[tuple[Customer, Period, int]]:
    """Customer-periods whose close instant lies in (after, through]."""
    spread = max_extra_us(meters)
    for c in customers:
        if not c.subscriptions:
            continue
        first = min(s.start for s in c.subscriptions)
        lo = first if after is None else max(first, after - spread - _ZONE_SPREAD_US)
        if lo > through:
            continue
        periods = {
            p.label: p for cycle in c.cycles() for p in cycle.periods_overlapping(lo, through + 1)
        }
        for p in sorted(periods.values(), key=lambda p: (p.start, p.end, p.label)):
            if not c.subscriptions_in(p.start, p.end):
                continue
            closing = closes_at(p, meters)
            if (after is None or closing > after) and closing <= through:
                yield c, p, closing
