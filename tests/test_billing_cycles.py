"""Billing cycles (DESIGN §7): month, quarter, year, week; calendar or anniversary anchor."""

from __future__ import annotations

import calendar
import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.billing.periods import (
    Anchor,
    BillingCycle,
    Cycle,
    label_year,
    month,
    period_for_label,
)
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us, from_datetime, parse_rfc3339


def T(text: str) -> int:
    return parse_rfc3339(text)


def spans(cycle: Cycle, t: str, n: int = 3) -> list[tuple[str, str, str]]:
    k = cycle.index_of(T(t))
    return [
        (p.label, format_us(p.start), format_us(p.end))
        for p in (cycle.period(k + i) for i in range(n))
    ]


@pytest.mark.parametrize(
    ("cycle", "at", "expected"),
    [
        pytest.param(
            Cycle(), "2024-02-10T00:00:00Z",
            [("2024-02", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")],
            id="calendar month: February 2024",
        ),
        pytest.param(
            Cycle(BillingCycle.QUARTER), "2024-05-10T00:00:00Z",
            [("2024-Q2", "2024-04-01T00:00:00Z", "2024-07-01T00:00:00Z")],
            id="calendar quarter: 2024-Q2 = April to June",
        ),
        pytest.param(
            Cycle(BillingCycle.YEAR), "2024-12-31T23:59:59Z",
            [("2024", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z")],
            id="calendar year: 2024",
        ),
        pytest.param(
            Cycle(BillingCycle.WEEK), "2024-01-17T12:00:00Z",
            [("2024-W03", "2024-01-15T00:00:00Z", "2024-01-22T00:00:00Z")],
            id="calendar week: Wed 2024-01-17 is in 2024-W03, Monday Jan 15 to Monday Jan 22",
        ),
        pytest.param(
            Cycle(BillingCycle.WEEK), "2024-12-31T00:00:00Z",
            [("2025-W01", "2024-12-30T00:00:00Z", "2025-01-06T00:00:00Z")],
            id="calendar week: Tue 2024-12-31 is in ISO week 2025-W01",
        ),
        pytest.param(
            Cycle(BillingCycle.MONTH, timezone="Asia/Tokyo"), "2024-01-31T16:00:00Z",
            [("2024-02", "2024-01-31T15:00:00Z", "2024-02-29T15:00:00Z")],
            id="calendar month in Tokyo: 2024-01-31T16:00Z is already February",
        ),
        pytest.param(
            Cycle(BillingCycle.MONTH, Anchor.SUBSCRIPTION, anchor_us=T("2024-01-31T10:30:00Z")),
            "2024-01-31T10:30:00Z",
            [
                ("2024-01-31", "2024-01-31T10:30:00Z", "2024-02-29T10:30:00Z"),
                ("2024-02-29", "2024-02-29T10:30:00Z", "2024-03-31T10:30:00Z"),
                ("2024-03-31", "2024-03-31T10:30:00Z", "2024-04-30T10:30:00Z"),
            ],
            id="anniversary month from Jan 31 10:30: Feb 29 (clamped), then Mar 31 again",
        ),
        pytest.param(
            Cycle(BillingCycle.YEAR, Anchor.SUBSCRIPTION, anchor_us=T("2024-02-29T00:00:00Z")),
            "2024-03-01T00:00:00Z",
            [
                ("2024-02-29", "2024-02-29T00:00:00Z", "2025-02-28T00:00:00Z"),
                ("2025-02-28", "2025-02-28T00:00:00Z", "2026-02-28T00:00:00Z"),
            ],
            id="anniversary year from a leap day: Feb 28 in common years",
        ),
        pytest.param(
            Cycle(
                BillingCycle.MONTH, Anchor.SUBSCRIPTION, "America/New_York",
                T("2024-02-10T14:00:00Z"),
            ),
            "2024-03-01T00:00:00Z",
            [
                ("2024-02-10", "2024-02-10T14:00:00Z", "2024-03-10T13:00:00Z"),
                ("2024-03-10", "2024-03-10T13:00:00Z", "2024-04-10T13:00:00Z"),
            ],
            id="anniversary in New York keeps 09:00 local across the DST change (14:00Z then 13:00Z)",
        ),
        pytest.param(
            Cycle(BillingCycle.WEEK, Anchor.SUBSCRIPTION, anchor_us=T("2024-01-17T08:00:00Z")),
            "2024-01-25T00:00:00Z",
            [("2024-01-24", "2024-01-24T08:00:00Z", "2024-01-31T08:00:00Z")],
            id="anniversary week from Wednesday 08:00",
        ),
    ],
)  # fmt: skip
def test_periods(cycle: Cycle, at: str, expected: list[tuple[str, str, str]]) -> None:
    assert spans(cycle, at, len(expected)) == expected


def test_the_calendar_month_cycle_matches_the_month_periods_of_before() -> None:
    cycle = Cycle(timezone="Europe/Berlin")
    assert cycle.period_for("2024-03") == month("2024-03", "Europe/Berlin")


@pytest.mark.parametrize(
    ("label", "cycles", "start"),
    [
        ("2024-01", [Cycle()], "2024-01-01T00:00:00Z"),
        ("2024-Q3", [Cycle(BillingCycle.QUARTER)], "2024-07-01T00:00:00Z"),
        ("2024", [Cycle(BillingCycle.YEAR)], "2024-01-01T00:00:00Z"),
        ("2024-W03", [Cycle(BillingCycle.WEEK)], "2024-01-15T00:00:00Z"),
        (
            "2024-02-15",
            [Cycle(), Cycle(anchor=Anchor.SUBSCRIPTION, anchor_us=T("2024-01-15T06:00:00Z"))],
            "2024-02-15T06:00:00Z",
        ),
    ],
)
def test_labels_name_periods(label: str, cycles: list[Cycle], start: str) -> None:
    assert format_us(period_for_label(label, cycles).start) == start


@pytest.mark.parametrize(
    ("label", "fragment"),
    [
        ("2024-13", "period must be"),
        ("2024-Q5", "period must be"),
        ("2024-02-16", "no billing period labelled '2024-02-16'"),  # not an anniversary start
        ("Jan 2024", "period must be"),
    ],
)
def test_bad_labels_are_invalid_arguments(label: str, fragment: str) -> None:
    cycles = [Cycle(), Cycle(anchor=Anchor.SUBSCRIPTION, anchor_us=T("2024-01-15T06:00:00Z"))]
    with pytest.raises(MeterlineError) as info:
        period_for_label(label, cycles)
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert fragment in info.value.message


def test_label_year() -> None:
    assert [label_year(x) for x in ("2024-01", "2025-Q1", "2026", "2027-W05", "2028-02-29")] == [
        2024, 2025, 2026, 2027, 2028,
    ]  # fmt: skip


ZONES = st.sampled_from(
    ["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe", "Asia/Kathmandu"]
)
# Starts on month ends, leap days and DST-change days are what the examples are for.
LOCAL_STARTS = st.one_of(
    st.datetimes(datetime(2019, 1, 1), datetime(2031, 1, 1)),
    st.builds(  # the last day of a month, any hour
        lambda y, m, h: datetime(y, m, calendar.monthrange(y, m)[1], h),
        st.integers(2019, 2030),
        st.integers(1, 12),
        st.integers(0, 23),
    ),
    st.sampled_from(
        [datetime(2024, 1, 31, 2, 30), datetime(2024, 2, 29, 23, 59), datetime(2024, 3, 10, 2, 30),
         datetime(2024, 3, 31, 2, 30), datetime(2024, 10, 27, 2, 30), datetime(2024, 11, 3, 1, 30),
         datetime(2023, 8, 31, 0, 0)]
    ),
)  # fmt: skip
CYCLES = st.sampled_from(list(BillingCycle))


def _cycle(kind: BillingCycle, tz: str, local: datetime, anniversary: bool) -> Cycle:
    anchor = from_datetime(local.replace(tzinfo=ZoneInfo(tz)))
    return Cycle(kind, Anchor.SUBSCRIPTION if anniversary else Anchor.CALENDAR, tz, anchor)


@settings(max_examples=150, deadline=None)
@given(CYCLES, ZONES, LOCAL_STARTS, st.booleans(), st.integers(-3, 40))
def test_periods_tile_time_and_labels_sort_like_starts(
    kind: BillingCycle, tz: str, local: datetime, anniversary: bool, first: int
) -> None:
    cycle = _cycle(kind, tz, local, anniversary)
    periods = [cycle.period(k) for k in range(first, first + 14)]
    for a, b in itertools.pairwise(periods):
        assert a.end == b.start  # no gap, no overlap
        assert a.start < a.end
        assert a.label < b.label  # labels sort like starts
    for p in periods:
        assert cycle.period_of(p.start) == p
        assert cycle.period_of(p.end - 1) == p
        assert cycle.period_for(p.label) == p  # the label names the period back


@settings(max_examples=100, deadline=None)
@given(ZONES, LOCAL_STARTS, st.integers(0, 60))
def test_anniversary_months_start_on_the_anchor_day_or_the_months_last_day(
    tz: str, local: datetime, k: int
) -> None:
    cycle = _cycle(BillingCycle.MONTH, tz, local, True)
    p = cycle.period(k)
    local_start = datetime.fromisoformat(format_us(p.start).replace("Z", "+00:00")).astimezone(
        ZoneInfo(tz)
    )
    anchor_local = datetime.fromisoformat(
        format_us(cycle.anchor_us).replace("Z", "+00:00")
    ).astimezone(ZoneInfo(tz))
    next_day = local_start + timedelta(days=1)
    assert local_start.day == anchor_local.day or (
        local_start.day < anchor_local.day and next_day.month != local_start.month
    )


@settings(max_examples=150, deadline=None)
@given(
    CYCLES,
    ZONES,
    LOCAL_STARTS,
    st.booleans(),
    st.integers(parse_rfc3339("2019-01-01T00:00:00Z"), parse_rfc3339("2031-01-01T00:00:00Z")),
    st.integers(1, 200 * 24 * 3600 * 10**6),
)
def test_every_instant_lies_in_exactly_one_period_and_spans_are_tiled(
    kind: BillingCycle, tz: str, local: datetime, anniversary: bool, t: int, span: int
) -> None:
    """Any instant (not only period starts) is in one period: the one before ends where
    it starts; the periods overlapping any span cover it with no gap or overlap."""
    cycle = _cycle(kind, tz, local, anniversary)
    p = cycle.period_of(t)
    assert p.start <= t < p.end
    assert cycle.period_of(p.start - 1).end == p.start
    assert cycle.periods_overlapping(p.start, p.end) == [p]
    covering = cycle.periods_overlapping(t, t + span)
    assert covering[0].start <= t and covering[-1].end >= t + span
    for a, b in itertools.pairwise(covering):
        assert a.end == b.start


def test_a_customers_subscriptions_share_one_billing_cycle() -> None:
    """A weekly subscription after a monthly one would be billed on the monthly
    invoice's period as well as on its own weeks: refused, naming the path."""
    from meterline.billing.customers import parse_customer

    sub = {"price_book": "std", "start": "2024-01-01T00:00:00Z", "end": "2024-02-01T00:00:00Z"}
    weekly = {"price_book": "std", "start": "2024-02-01T00:00:00Z", "billing_cycle": "week"}
    raw = {"id": "c1", "name": "C", "currency": "EUR", "subscriptions": [sub, weekly]}
    with pytest.raises(MeterlineError) as info:
        parse_customer(raw, "customers[0]")
    assert info.value.code == ErrorCode.INVALID_CATALOG
    assert "customers[0].subscriptions[1]" in info.value.message
    assert "share one billing cycle" in info.value.message
    same = {**weekly, "billing_cycle": "month"}
    assert len(parse_customer({**raw, "subscriptions": [sub, same]}, "c").subscriptions) == 2
