"""Billing periods: calendar months in the customer's timezone (DESIGN §7).

A period is [first instant of the month, first instant of the next month) in
local time, converted to UTC microseconds. A customer in Asia/Tokyo has
January = [2023-12-31T15:00Z, 2024-01-31T15:00Z), so usage at
2024-01-31T16:00Z is billed in February.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
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
