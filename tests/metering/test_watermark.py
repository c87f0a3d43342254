"""Per-source and global watermarks, idle sources, finality."""

from __future__ import annotations

from meterline.domain.timestamps import US_PER_HOUR, US_PER_MINUTE, parse_rfc3339
from meterline.metering.watermark import (
    DEFAULT_IDLE_TIMEOUT_US,
    SourceState,
    active_sources,
    advance,
    global_watermark,
    is_final,
)


def t(text: str) -> int:
    return parse_rfc3339(text)


NOW = t("2024-01-15T16:00:00Z")


def test_advance_tracks_greatest_event_time_and_receipt() -> None:
    state = advance({}, [("gw", t("2024-01-15T14:05:00Z")), ("gw", t("2024-01-15T14:45:00Z"))], NOW)
    state = advance(state, [("gw", t("2024-01-15T14:15:00Z")), ("billing", 5)], NOW + 10)
    assert state == {
        "gw": SourceState(t("2024-01-15T14:45:00Z"), NOW + 10),
        "billing": SourceState(5, NOW + 10),
    }


def test_advance_never_moves_backwards_and_does_not_mutate_input() -> None:
    before = {"gw": SourceState(100, NOW)}
    after = advance(before, [("gw", 50)], NOW - 1)
    assert after == {"gw": SourceState(100, NOW)}
    assert advance(before, [], NOW) == before
    assert before == {"gw": SourceState(100, NOW)}


def test_idle_source_does_not_stall_the_global_watermark() -> None:
    sources = {
        "gateway": SourceState(t("2024-01-15T15:55:00Z"), NOW - 1),
        # Last heard of two hours ago, its watermark stuck at 09:00.
        "batch-job": SourceState(t("2024-01-15T09:00:00Z"), NOW - 2 * US_PER_HOUR),
    }
    assert DEFAULT_IDLE_TIMEOUT_US == US_PER_HOUR
    assert active_sources(sources, NOW) == ["gateway"]
    assert global_watermark(sources, NOW) == t("2024-01-15T15:55:00Z")


def test_source_within_idle_timeout_holds_the_global_watermark_back() -> None:
    sources = {
        "gateway": SourceState(t("2024-01-15T15:55:00Z"), NOW),
        # Heard of exactly one idle timeout ago: still active (inclusive).
        "mobile": SourceState(t("2024-01-15T13:10:00Z"), NOW - US_PER_HOUR),
    }
    assert active_sources(sources, NOW) == ["gateway", "mobile"]
    assert global_watermark(sources, NOW) == t("2024-01-15T13:10:00Z")
    # One microsecond later mobile is idle and releases the watermark.
    assert global_watermark(sources, NOW + 1) == t("2024-01-15T15:55:00Z")
    # A longer idle timeout keeps it active.
    assert global_watermark(sources, NOW + 1, idle_timeout_us=2 * US_PER_HOUR) == t(
        "2024-01-15T13:10:00Z"
    )


def test_no_active_source_uses_greatest_watermark() -> None:
    sources = {
        "a": SourceState(t("2024-01-15T10:00:00Z"), NOW - 3 * US_PER_HOUR),
        "b": SourceState(t("2024-01-15T11:00:00Z"), NOW - 2 * US_PER_HOUR),
    }
    assert active_sources(sources, NOW) == []
    assert global_watermark(sources, NOW) == t("2024-01-15T11:00:00Z")


def test_nothing_ever_arrived() -> None:
    assert global_watermark({}, NOW) is None
    assert global_watermark({}, NOW, previous=42) == 42
    assert not is_final(0, 0, None)


def test_previous_global_watermark_keeps_finality_monotone() -> None:
    window_end = t("2024-01-15T12:00:00Z")
    lateness = 3 * US_PER_HOUR
    sources = {"gateway": SourceState(t("2024-01-15T15:30:00Z"), NOW)}
    published = global_watermark(sources, NOW)
    assert is_final(window_end, lateness, published)
    # A lagging source resumes: the least active watermark drops to 13:00...
    sources = advance(sources, [("mobile", t("2024-01-15T13:00:00Z"))], NOW + US_PER_MINUTE)
    assert global_watermark(sources, NOW + US_PER_MINUTE) == t("2024-01-15T13:00:00Z")
    # ...but the published watermark does not go back, so the window stays final.
    held = global_watermark(sources, NOW + US_PER_MINUTE, previous=published)
    assert held == published
    assert is_final(window_end, lateness, held)
    # And it moves on once every active source is past it.
    sources = advance(sources, [("mobile", t("2024-01-15T15:40:00Z"))], NOW + 2 * US_PER_MINUTE)
    assert global_watermark(sources, NOW + 2 * US_PER_MINUTE, previous=published) == t(
        "2024-01-15T15:30:00Z"
    )
    sources = advance(sources, [("gateway", t("2024-01-15T15:50:00Z"))], NOW + 3 * US_PER_MINUTE)
    assert global_watermark(sources, NOW + 3 * US_PER_MINUTE, previous=published) == t(
        "2024-01-15T15:40:00Z"
    )


def test_receiving_clock_behind_last_receipt_counts_as_active() -> None:
    sources = {"a": SourceState(10, NOW), "b": SourceState(20, NOW - 5 * US_PER_HOUR)}
    assert active_sources(sources, NOW - US_PER_MINUTE) == ["a"]
