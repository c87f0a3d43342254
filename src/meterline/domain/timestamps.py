"""Instants as integer microseconds since the Unix epoch, UTC.

Integers compare, sort and store identically on every backend, which keeps
documents byte-identical between SQLite and PostgreSQL (DESIGN §10).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_HOUR = 60 * US_PER_MINUTE
US_PER_DAY = 24 * US_PER_HOUR

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)

# RFC 3339 date-time: an explicit offset is mandatory. Up to 9 fractional
# digits are accepted (Go and Java emit nanoseconds); the instant is truncated
# to the microsecond, the precision billing works at.
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


# The common shape, "...Z", parsed without building a datetime: the day's
# start comes from a small cache, the rest is integer arithmetic.
_ZULU = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?[Zz]", re.ASCII)
_day_start: dict[str, int] = {}


class InvalidTimestamp(ValueError):
    pass


def _day(text: str, whole: str) -> int:
    us = _day_start.get(text)
    if us is None:
        try:
            dt = datetime(int(text[:4]), int(text[5:7]), int(text[8:10]), tzinfo=UTC)
        except ValueError as exc:
            raise InvalidTimestamp(f"{whole!r} is not a valid date-time: {exc}") from None
        us = (dt - _EPOCH) // _ONE_US
        if len(_day_start) > 100_000:
            _day_start.clear()
        _day_start[text] = us
    return us


# The shape nearly every producer sends ("...T...Z", upper case), checked
# without capturing groups; `datetime.fromisoformat` (C) then parses it. It is
# as strict as the path below on this shape (it refuses an impossible date or
# time, and truncates digits past the microsecond the same way); whatever it
# refuses, and every other shape, takes the path below, which gives the error.
_ZULU_SHAPE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z", re.ASCII)


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 timestamp with an explicit offset into UTC microseconds."""
    # Hour 24 is refused here whatever a Python version's fromisoformat does with it.
    if _ZULU_SHAPE.fullmatch(text) is not None and text[11:13] < "24":
        try:
            return (datetime.fromisoformat(text) - _EPOCH) // _ONE_US
        except ValueError:
            pass
    return parse_rfc3339_strictly(text)


def parse_rfc3339_strictly(text: str) -> int:
    """`parse_rfc3339` by the regular expressions alone (the reference; every error)."""
    z = _ZULU.fullmatch(text)
    if z is not None:
        day, hh, mm, ss, frac = z.groups()
        h, mi, s = int(hh), int(mm), int(ss)
        if h > 23 or mi > 59 or s > 59:
            raise InvalidTimestamp(f"{text!r} is not a valid date-time: time out of range")
        us = _day(day, text) + h * US_PER_HOUR + mi * US_PER_MINUTE + s * US_PER_SECOND
        return us + int(frac[:6].ljust(6, "0")) if frac else us
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise InvalidTimestamp(
            f"{text!r} is not an RFC 3339 timestamp with an explicit offset "
            "(e.g. 2024-01-15T14:23:45.123Z)"
        )
    year, month, day, hour, minute, second, frac, zulu, sign, oh, om = m.groups()
    try:
        dt = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), tzinfo=UTC
        )
    except ValueError as exc:
        raise InvalidTimestamp(f"{text!r} is not a valid date-time: {exc}") from None
    us = (dt - _EPOCH) // _ONE_US
    if frac:
        us += int(frac[:6].ljust(6, "0"))
    if not zulu:
        offset_h, offset_m = int(oh), int(om)
        if offset_h > 23 or offset_m > 59:
            raise InvalidTimestamp(f"{text!r} has an invalid UTC offset")
        offset = (offset_h * 60 + offset_m) * US_PER_MINUTE
        us = us - offset if sign == "+" else us + offset
    return us


def from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise InvalidTimestamp("naive datetime: an explicit offset is required")
    return (dt - _EPOCH) // _ONE_US


def to_datetime(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def format_us(us: int) -> str:
    """Canonical text of an instant: UTC with 'Z', microseconds only when non-zero."""
    dt = to_datetime(us)
    base = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        return f"{base}.{dt.microsecond:06d}Z"
    return base + "Z"


_DURATION = re.compile(r"(\d+)(us|ms|s|m|h|d)")
_UNIT_US = {
    "us": 1,
    "ms": 1000,
    "s": US_PER_SECOND,
    "m": US_PER_MINUTE,
    "h": US_PER_HOUR,
    "d": US_PER_DAY,
}


def parse_duration(text: str) -> int:
    """'90s', '5m', '3h', '35d' -> microseconds. Compound forms like '1h30m' work."""
    text = text.strip()
    pos, total = 0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += int(m.group(1)) * _UNIT_US[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise ValueError(f"invalid duration {text!r} (examples: 30s, 5m, 1h, 35d)")
    return total
