"""Tumbling windows and the worked examples of DESIGN §4."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.domain.timestamps import US_PER_DAY, US_PER_HOUR, US_PER_MINUTE, parse_rfc3339
from meterline.metering.aggregation import Aggregation, aggregate, result
from meterline.metering.watermark import LatenessStatus, classify_lateness, is_final
from meterline.metering.windows import (
    Window,
    is_aligned,
    window_of,
    window_start,
    windows_between,
)


def t(text: str) -> int:
    return parse_rfc3339(text)


def test_event_lands_in_its_hour() -> None:
    assert window_of(t("2024-01-15T14:23:45.123Z"), US_PER_HOUR) == Window(
        t("2024-01-15T14:00:00Z"), t("2024-01-15T15:00:00Z")
    )


def test_month_boundary_day_and_hour_windows() -> None:
    before = t("2024-01-31T23:59:50Z")
    after = t("2024-02-01T00:00:10Z")
    feb_1 = t("2024-02-01T00:00:00Z")
    assert window_of(before, US_PER_DAY) == Window(t("2024-01-31T00:00:00Z"), feb_1)
    assert window_of(before, US_PER_HOUR) == Window(t("2024-01-31T23:00:00Z"), feb_1)
    assert window_of(after, US_PER_DAY) == Window(feb_1, t("2024-02-02T00:00:00Z"))
    assert window_of(after, US_PER_HOUR) == Window(feb_1, t("2024-02-01T01:00:00Z"))


def test_windows_are_half_open() -> None:
    end = t("2024-01-15T15:00:00Z")
    assert window_of(end - 1, US_PER_HOUR).end == end
    assert window_of(end, US_PER_HOUR).start == end


def test_minute_window_and_non_utc_offset_input() -> None:
    # 15:23:45+01:00 is 14:23:45Z: windows are aligned on UTC, whatever offset the event used.
    assert window_of(t("2024-01-15T15:23:45+01:00"), US_PER_MINUTE) == Window(
        t("2024-01-15T14:23:00Z"), t("2024-01-15T14:24:00Z")
    )


def test_pre_epoch_instants_floor() -> None:
    assert window_start(-1, US_PER_HOUR) == -US_PER_HOUR
    assert window_of(t("1969-12-31T23:30:00Z"), US_PER_DAY) == Window(-US_PER_DAY, 0)


def test_three_events_in_one_window_count_three() -> None:
    times = [t(f"2024-01-15T14:{m}:00Z") for m in ("05", "15", "45")]
    assert {window_of(x, US_PER_HOUR) for x in times} == {
        Window(t("2024-01-15T14:00:00Z"), t("2024-01-15T15:00:00Z"))
    }
    state = aggregate(Aggregation.COUNT, [(x, f"e{i}", None) for i, x in enumerate(times)])
    assert result(state) == Decimal(3)


def test_event_for_open_window_is_an_update_not_late() -> None:
    event = t("2024-01-15T14:23:45Z")
    lateness = classify_lateness(event, US_PER_HOUR, 3 * US_PER_HOUR, t("2024-01-15T15:30:00Z"))
    assert lateness.status is LatenessStatus.UPDATES_OPEN_WINDOW
    assert lateness.late_by_us == 0
    assert not is_final(lateness.window.end, 3 * US_PER_HOUR, t("2024-01-15T15:30:00Z"))


def test_event_for_final_window_is_late() -> None:
    event = t("2024-01-15T14:23:45Z")
    lateness = classify_lateness(event, US_PER_HOUR, 3 * US_PER_HOUR, t("2024-01-15T18:30:00Z"))
    assert lateness.status is LatenessStatus.LATE
    assert lateness.late_by_us == 30 * US_PER_MINUTE
    assert lateness.window == Window(t("2024-01-15T14:00:00Z"), t("2024-01-15T15:00:00Z"))


def test_finality_starts_exactly_at_end_plus_lateness() -> None:
    end = t("2024-01-15T15:00:00Z")
    assert not is_final(end, 3 * US_PER_HOUR, t("2024-01-15T17:59:59.999999Z"))
    assert is_final(end, 3 * US_PER_HOUR, t("2024-01-15T18:00:00Z"))
    at_boundary = classify_lateness(end - 1, US_PER_HOUR, 3 * US_PER_HOUR, end + 3 * US_PER_HOUR)
    assert (at_boundary.status, at_boundary.late_by_us) == (LatenessStatus.LATE, 0)


def test_event_ahead_of_watermark_is_on_time() -> None:
    event = t("2024-01-15T14:23:45Z")
    for watermark in (None, t("2024-01-15T14:50:00Z"), t("2024-01-15T14:00:00Z")):
        lateness = classify_lateness(event, US_PER_HOUR, 3 * US_PER_HOUR, watermark)
        assert lateness.status is LatenessStatus.ON_TIME


def test_windows_between_aligned_range() -> None:
    start = t("2024-01-15T00:00:00Z")
    got = windows_between(start, start + 3 * US_PER_HOUR, US_PER_HOUR)
    assert got == [Window(start + i * US_PER_HOUR, start + (i + 1) * US_PER_HOUR) for i in range(3)]


def test_windows_between_unaligned_range_includes_partial_edges() -> None:
    got = windows_between(t("2024-01-15T00:30:00Z"), t("2024-01-15T02:00:01Z"), US_PER_HOUR)
    assert [w.start for w in got] == [
        t("2024-01-15T00:00:00Z"),
        t("2024-01-15T01:00:00Z"),
        t("2024-01-15T02:00:00Z"),
    ]


def test_windows_between_empty_and_month() -> None:
    jan = t("2024-01-01T00:00:00Z")
    assert windows_between(jan, jan, US_PER_HOUR) == []
    assert windows_between(jan + 1, jan, US_PER_HOUR) == []
    assert len(windows_between(jan, t("2024-02-01T00:00:00Z"), US_PER_DAY)) == 31


def test_is_aligned() -> None:
    assert is_aligned(t("2024-01-15T14:00:00Z"), US_PER_HOUR)
    assert not is_aligned(t("2024-01-15T14:00:01Z"), US_PER_HOUR)
    assert is_aligned(t("2024-01-15T14:01:00Z"), US_PER_MINUTE)


@pytest.mark.parametrize("size", [0, -US_PER_HOUR])
def test_non_positive_window_size_is_refused(size: int) -> None:
    with pytest.raises(ValueError, match="positive"):
        window_start(0, size)
    with pytest.raises(ValueError, match="positive"):
        windows_between(0, 10, size)
