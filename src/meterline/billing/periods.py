"""Billing periods: calendar months in the customer's timezone (DESIGN §7).

A period is [first instant of the month, first instant of the next month) in
local time, converted to UTC microseconds. A customer in Asia/Tokyo has
January = [2023-12-31T15:00Z, 2024-01-31T15:00Z), so usage at
2024-01-31T16:00Z is billed in February.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us, from_datetime, to_datetime

_PERIOD = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True, order=True)
class Period:
    start: int
    end: int
    label: str  # YYYY-MM in the customer's timezone

    def to_dict(self) -> dict[str, str]:
        return {"start": format_us(self.start), "end": format_us(self.end), "label": self.label}

    def overlaps(self, lo: int, hi: int) -> bool:
        return lo < self.end and self.start < hi


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise MeterlineError(ErrorCode.INVALID_CATALOG, f"unknown IANA timezone {name!r}") from None


def parse_label(label: str) -> tuple[int, int]:
    m = _PERIOD.fullmatch(label)
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"period must be YYYY-MM, got {label!r}")
    return int(m.group(1)), int(m.group(2))


def month(label: str, timezone: str) -> Period:
    year, mon = parse_label(label)
    tz = zone(timezone)
    start = datetime(year, mon, 1, tzinfo=tz)
    end = datetime(year + (mon == 12), mon % 12 + 1, 1, tzinfo=tz)
    return Period(from_datetime(start), from_datetime(end), label)


def month_of(t_us: int, timezone: str) -> Period:
    """The period holding instant t for a customer in `timezone`."""
    local = to_datetime(t_us).astimezone(zone(timezone))
    return month(f"{local.year:04d}-{local.month:02d}", timezone)


def months_overlapping(lo: int, hi: int, timezone: str) -> list[Period]:
    """Every period of the timezone that overlaps [lo, hi)."""
    if hi <= lo:
        return []
    periods = [month_of(lo, timezone)]
    while periods[-1].end < hi:
        periods.append(month_of(periods[-1].end, timezone))
    return periods


# --- billing cycles (DESIGN §7) ------------------------------------------------------------
#
# A cycle is `month` (default), `quarter`, `year` or `week` (Monday start), anchored on the
# calendar (default) or on the subscription start (anniversary: each period starts on the
# start's day of month and local time, clamped to the month's last day, so a subscription
# started on Jan 31 has periods from Feb 29 (leap year), Mar 31, Apr 30, ...). Period k of a
# cycle is computed from the anchor directly, never from period k-1, so a clamped month does
# not drag later periods to an earlier day. Periods are [start_k, start_k+1): they tile time.
#
# Labels are stable and sort like the starts within one cycle: 2024-01, 2024-Q1, 2024,
# 2024-W03 (ISO week of the period's Monday) and, for anniversary periods, the local start
# date 2024-01-15.


class BillingCycle(StrEnum):
    MONTH = "month"
    QUARTER = "quarter"
    YEAR = "year"
    WEEK = "week"


class Anchor(StrEnum):
    CALENDAR = "calendar"
    SUBSCRIPTION = "subscription"


_MONTHS = {BillingCycle.MONTH: 1, BillingCycle.QUARTER: 3, BillingCycle.YEAR: 12}
_CALENDAR_MONDAY = date(2000, 1, 3)  # a Monday: calendar weeks count from it
_QUARTER = re.compile(r"(\d{4})-Q([1-4])")
_YEAR = re.compile(r"(\d{4})")
_WEEK = re.compile(r"(\d{4})-W(\d{2})")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")


@dataclass(frozen=True)
class Cycle:
    """How one subscription's time is cut into billing periods, in `timezone`.

    `anchor_us` is the subscription start; it matters only for anniversary cycles.
    """

    cycle: BillingCycle = BillingCycle.MONTH
    anchor: Anchor = Anchor.CALENDAR
    timezone: str = "UTC"
    anchor_us: int = 0

    def _local_anchor(self) -> datetime:
        if self.anchor is Anchor.CALENDAR:
            first = _CALENDAR_MONDAY if self.cycle is BillingCycle.WEEK else date(2000, 1, 1)
            return datetime(first.year, first.month, first.day)
        local = to_datetime(self.anchor_us).astimezone(zone(self.timezone))
        return local.replace(tzinfo=None)

    def start(self, k: int) -> int:
        """The start of period k (k = 0 holds the anchor), in UTC microseconds."""
        a = self._local_anchor()
        if self.cycle is BillingCycle.WEEK:
            local = a + timedelta(weeks=k)
        else:
            index = a.year * 12 + a.month - 1 + k * _MONTHS[self.cycle]
            year, month0 = divmod(index, 12)
            day = min(a.day, calendar.monthrange(year, month0 + 1)[1])
            local = a.replace(year=year, month=month0 + 1, day=day)
        return from_datetime(local.replace(tzinfo=zone(self.timezone)))

    def index_of(self, t_us: int) -> int:
        """k such that start(k) <= t < start(k + 1)."""
        a = self._local_anchor()
        local = to_datetime(t_us).astimezone(zone(self.timezone)).replace(tzinfo=None)
        if self.cycle is BillingCycle.WEEK:
            k = (local.date() - a.date()).days // 7
        else:
            months = (local.year - a.year) * 12 + local.month - a.month
            k = months // _MONTHS[self.cycle]
        while self.start(k) > t_us:
            k -= 1
        while self.start(k + 1) <= t_us:
            k += 1
        return k

    def period(self, k: int) -> Period:
        start = self.start(k)
        return Period(start, self.start(k + 1), self.label(start))

    def period_of(self, t_us: int) -> Period:
        return self.period(self.index_of(t_us))

    def periods_overlapping(self, lo: int, hi: int) -> list[Period]:
        if hi <= lo:
            return []
        first, last = self.index_of(lo), self.index_of(hi - 1)
        return [self.period(k) for k in range(first, last + 1)]

    def label(self, start_us: int) -> str:
        local = to_datetime(start_us).astimezone(zone(self.timezone))
        if self.anchor is Anchor.SUBSCRIPTION:
            return local.date().isoformat()
        match self.cycle:
            case BillingCycle.MONTH:
                return f"{local.year:04d}-{local.month:02d}"
            case BillingCycle.QUARTER:
                return f"{local.year:04d}-Q{(local.month - 1) // 3 + 1}"
            case BillingCycle.YEAR:
                return f"{local.year:04d}"
            case BillingCycle.WEEK:
                iso = local.date().isocalendar()
                return f"{iso.year:04d}-W{iso.week:02d}"

    def period_for(self, label: str) -> Period | None:
        """The period of this cycle with this label, or None when the label is of another kind
        (or, for an anniversary, not the start date of one of this subscription's periods)."""
        first = _label_instant(label, self)
        if first is None:
            return None
        period = self.period_of(first)
        return period if period.label == label else None


def _label_instant(label: str, cycle: Cycle) -> int | None:
    """An instant inside the period a label names, for this cycle's kind of label."""
    tz = zone(cycle.timezone)
    if cycle.anchor is Anchor.SUBSCRIPTION:
        m = _DATE.fullmatch(label)
        if m is None:
            return None
        try:
            day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        except ValueError:
            return None
        # the period that starts on this local day starts at the anchor's local time
        a = cycle._local_anchor()
        local = datetime.combine(day, a.time())
        return from_datetime(local.replace(tzinfo=tz))
    patterns = {
        BillingCycle.MONTH: _PERIOD,
        BillingCycle.QUARTER: _QUARTER,
        BillingCycle.YEAR: _YEAR,
        BillingCycle.WEEK: _WEEK,
    }
    m = patterns[cycle.cycle].fullmatch(label)
    if m is None:
        return None
    year = int(m.group(1))
    if not 1 <= year <= 9998:
        return None
    match cycle.cycle:
        case BillingCycle.MONTH:
            if not 1 <= int(m.group(2)) <= 12:
                return None
            local = datetime(year, int(m.group(2)), 1)
        case BillingCycle.QUARTER:
            local = datetime(year, 3 * int(m.group(2)) - 2, 1)
        case BillingCycle.YEAR:
            local = datetime(year, 1, 1)
        case BillingCycle.WEEK:
            try:
                local = datetime.combine(date.fromisocalendar(year, int(m.group(2)), 1), time())
            except ValueError:
                return None
    return from_datetime(local.replace(tzinfo=tz))


LABEL_FORMS = "YYYY-MM, YYYY-Qn, YYYY, YYYY-Www or an anniversary start date YYYY-MM-DD"


def label_year(label: str) -> int:
    """The year of a well-formed label; INVALID_ARGUMENT unless it is one of the label forms
    with a real month, quarter, ISO week or date (2024-13 and 2024-02-30 are not)."""
    if _well_formed(label):
        return int(label[:4])
    raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"period must be {LABEL_FORMS}, got {label!r}")


def _well_formed(label: str) -> bool:
    if (m := _PERIOD.fullmatch(label)) is not None:
        return 1 <= int(m.group(2)) <= 12
    if (m := _WEEK.fullmatch(label)) is not None:
        return _iso_week_exists(int(m.group(1)), int(m.group(2)))
    if (m := _DATE.fullmatch(label)) is not None:
        return _date_exists(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if _QUARTER.fullmatch(label) or _YEAR.fullmatch(label):
        return int(label[:4]) >= 1
    return False


def _iso_week_exists(year: int, week: int) -> bool:
    try:
        date.fromisocalendar(year, week, 1)
    except ValueError:
        return False
    return True


def _date_exists(year: int, month_: int, day: int) -> bool:
    try:
        date(year, month_, day)
    except ValueError:
        return False
    return True


def period_for_label(label: str, cycles: Sequence[Cycle]) -> Period:
    """The period a label names for a customer whose subscriptions have these cycles.

    A calendar month label keeps working for every calendar-month customer; the
    first cycle (in subscription order) that has a period with this label wins.
    """
    label_year(label)
    for cycle in cycles:
        period = cycle.period_for(label)
        if period is not None:
            return period
    kinds = ", ".join(sorted({f"{c.cycle.value}/{c.anchor.value}" for c in cycles})) or "none"
    raise MeterlineError(
        ErrorCode.INVALID_ARGUMENT,
        f"no billing period labelled {label!r} for this customer (billing cycles: {kinds})",
    )
