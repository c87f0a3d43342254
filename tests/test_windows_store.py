"""Metering on the store (DESIGN §4): windows, watermarks, late events, usage."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from tests.support import event, ingest

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339
from meterline.services.catalog import apply_catalog
from meterline.services.retraction import retract_event
from meterline.services.usage import query_usage
from meterline.store.database import Store

NOW_US = parse_rfc3339("2024-02-10T00:00:00Z")
CATALOG = {
    "meters": [
        {
            "code": "api_calls",
            "event_type": "api_call",
            "aggregation": "count",
            "window": "1h",
            "allowed_lateness": "3h",
        },
        {
            "code": "tokens",
            "event_type": "llm_call",
            "aggregation": "sum",
            "property": "tokens",
            "group_by": ["model"],
        },
        {"code": "daily_calls", "event_type": "api_call", "aggregation": "count", "window": "1d"},
        {"code": "users", "event_type": "login", "aggregation": "unique_count", "property": "user"},
    ]
}


@pytest.fixture
def metered(store: Store) -> Store:
    apply_catalog(store, CATALOG, NOW_US)
    return store


def usage(
    store: Store, meter: str, lo: str, hi: str, customer: str = "acme", window: int | None = None
) -> dict[str, Any]:
    with store.read() as conn:
        return query_usage(
            conn,
            customer=customer,
            meter_code=meter,
            from_us=parse_rfc3339(lo),
            to_us=parse_rfc3339(hi),
            now_us=NOW_US,
            window_us=window,
        )


def test_event_lands_in_its_hour(metered: Store, clock: FixedClock) -> None:
    ingest(metered, clock, [event("e1", time="2024-02-05T14:23:45Z")])
    out = usage(metered, "api_calls", "2024-02-05T00:00:00Z", "2024-02-06T00:00:00Z")
    assert [(w["start"], w["end"], w["value"]) for w in out["windows"]] == [
        ("2024-02-05T14:00:00Z", "2024-02-05T15:00:00Z", "1")
    ]


def test_month_boundary_by_event_time(metered: Store, clock: FixedClock) -> None:
    ingest(
        metered,
        clock,
        [event("jan", time="2024-01-31T23:59:50Z"), event("feb", time="2024-02-01T00:00:10Z")],
    )
    jan = usage(metered, "daily_calls", "2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")
    feb = usage(metered, "daily_calls", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z")
    assert (jan["total"], feb["total"]) == ("1", "1")
    assert jan["windows"][0]["start"] == "2024-01-31T00:00:00Z"


def test_three_events_count_three(metered: Store, clock: FixedClock) -> None:
    ingest(metered, clock, [event(f"e{m}", time=f"2024-02-05T14:{m:02d}:00Z") for m in (5, 15, 45)])
    out = usage(metered, "api_calls", "2024-02-05T14:00:00Z", "2024-02-05T15:00:00Z")
    assert out["total"] == "3"
    assert out["windows"][0]["version"] == 1


def _late_rows(store: Store) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT event_id, meter_code, window_start, late_by_us FROM late_arrivals ORDER BY id"
                )
            )
        ]


def _marks(store: Store) -> list[tuple[Any, ...]]:
    with store.read() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT customer_id, from_us, kind, events FROM rerate_marks ORDER BY id")
            )
        ]


def test_open_window_updates_and_final_window_takes_late_events(
    metered: Store, clock: FixedClock
) -> None:
    window = ("2024-02-05T14:00:00Z", "2024-02-05T15:00:00Z")
    ingest(metered, clock, [event("e1", time="2024-02-05T14:23:00Z")])
    ingest(metered, clock, [event("wm1", customer="other", time="2024-02-05T15:30:00Z")])
    # Watermark 15:30, lateness 3h: [14:00, 15:00) is not final until 18:00.
    ingest(metered, clock, [event("e2", time="2024-02-05T14:50:00Z")])
    w = usage(metered, "api_calls", *window)["windows"][0]
    assert (w["value"], w["version"], w["final"]) == ("2", 2, False)
    assert _late_rows(metered) == []

    ingest(metered, clock, [event("wm2", customer="other", time="2024-02-05T18:30:00Z")])
    assert usage(metered, "api_calls", *window)["windows"][0]["final"] is True
    ingest(metered, clock, [event("e3", time="2024-02-05T14:55:00Z")])
    w = usage(metered, "api_calls", *window)["windows"][0]
    assert (w["value"], w["version"], w["final"]) == ("3", 3, True)
    thirty_minutes = 30 * 60 * 1_000_000
    assert _late_rows(metered) == [("e3", "api_calls", parse_rfc3339(window[0]), thirty_minutes)]
    assert _marks(metered) == [("acme", parse_rfc3339("2024-02-05T14:55:00Z"), "late", 1)]


def test_idle_source_does_not_stall_the_watermark(metered: Store) -> None:
    early = FixedClock(clock_at("2024-02-05T16:00:00Z"))
    ingest(metered, early, [event("s1", time="2024-02-05T10:00:00Z", source="quiet")])
    later = FixedClock(clock_at("2024-02-05T20:00:00Z"))
    ingest(metered, later, [event("s2", time="2024-02-05T19:00:00Z", source="busy")])
    with metered.read() as conn:
        wm = conn.execute(text("SELECT watermark FROM global_watermark")).scalar_one()
    assert wm == parse_rfc3339("2024-02-05T19:00:00Z")  # "quiet" idle for 4h > 1h


def clock_at(t: str):  # type: ignore[no-untyped-def]
    from meterline.domain.timestamps import to_datetime

    return to_datetime(parse_rfc3339(t))


def test_backfill_marks_for_rerating_without_moving_watermarks(
    metered: Store, clock: FixedClock
) -> None:
    ingest(metered, clock, [event("old", time="2023-12-01T10:00:00Z")], backfill=True)
    with metered.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM source_watermarks")).scalar_one() == 0
    assert _marks(metered) == [("acme", parse_rfc3339("2023-12-01T10:00:00Z"), "backfill", 1)]
    assert (
        usage(metered, "api_calls", "2023-12-01T00:00:00Z", "2023-12-02T00:00:00Z")["total"] == "1"
    )


def test_metered_event_without_its_property_is_quarantined(
    metered: Store, clock: FixedClock
) -> None:
    report = ingest(
        metered,
        clock,
        [
            event("ok", type_="llm_call", props={"tokens": 10, "model": "a"}),
            event("missing", type_="llm_call", props={"model": "a"}),
            event("text", type_="llm_call", props={"tokens": "many"}),
            event("bool", type_="llm_call", props={"tokens": True}),
            event("string-number", type_="llm_call", props={"tokens": "12.5"}),
        ],
    )
    assert report.accepted == 2
    assert [r.code for r in report.rejects] == ["INVALID_PROPERTY"] * 3
    with metered.read() as conn:
        assert (
            conn.execute(
                text("SELECT COUNT(*) FROM quarantine WHERE code = 'INVALID_PROPERTY'")
            ).scalar_one()
            == 3
        )


def test_sum_is_exact_and_grouped(metered: Store, clock: FixedClock) -> None:
    evs = [
        event(f"t{i}", type_="llm_call", props={"tokens": v, "model": m})
        for i, (v, m) in enumerate([("0.1", "a"), ("0.2", "a"), (3, "b"), ("0.1", None)])
    ]
    for e in evs:
        if e["properties"]["model"] is None:
            del e["properties"]["model"]
    ingest(metered, clock, evs)
    out = usage(metered, "tokens", "2024-02-01T00:00:00Z", "2024-02-02T00:00:00Z")
    assert out["total"] == "3.4"
    assert [(g["dimensions"], g["total"]) for g in out["groups"]] == [
        ({"model": "a"}, "0.3"),
        ({"model": "b"}, "3"),
        ({"model": None}, "0.1"),
    ]


def test_unique_count_over_a_range_is_not_a_sum_of_windows(
    metered: Store, clock: FixedClock
) -> None:
    logins = [("u1", "10:00"), ("u2", "10:30"), ("u1", "11:00"), ("u1", "12:00")]
    ingest(
        metered,
        clock,
        [
            event(f"l{i}", type_="login", time=f"2024-02-05T{t}:00Z", props={"user": u})
            for i, (u, t) in enumerate(logins)
        ],
    )
    out = usage(metered, "users", "2024-02-05T00:00:00Z", "2024-02-06T00:00:00Z")
    assert [w["value"] for w in out["windows"]] == ["2", "1", "1"]
    assert out["total"] == "2"


def test_retraction_recomputes_the_window_and_marks_the_period(
    metered: Store, clock: FixedClock
) -> None:
    ingest(metered, clock, [event("a"), event("b")])
    retract_event(metered, "default", "a", "bad telemetry", NOW_US)
    w = usage(metered, "api_calls", "2024-02-01T10:00:00Z", "2024-02-01T11:00:00Z")["windows"][0]
    assert (w["value"], w["version"]) == ("1", 2)
    assert _marks(metered)[-1][2] == "retraction"


def test_meter_added_later_indexes_stored_events(store: Store, clock: FixedClock) -> None:
    ingest(
        store,
        clock,
        [event(f"e{i}", type_="llm_call", props={"tokens": i}) for i in range(4)]
        + [event("bad", type_="llm_call", props={})],
    )
    report = apply_catalog(store, CATALOG, NOW_US)
    assert report.windows_built == 1
    out = usage(store, "tokens", "2024-02-01T00:00:00Z", "2024-02-02T00:00:00Z")
    assert out["total"] == "6"  # the event without tokens is stored, not billed


def test_rollup_to_days(metered: Store, clock: FixedClock) -> None:
    ingest(
        metered, clock, [event(f"e{h}", time=f"2024-02-05T{h:02d}:10:00Z") for h in range(0, 24, 3)]
    )
    out = usage(
        metered, "api_calls", "2024-02-05T00:00:00Z", "2024-02-06T00:00:00Z", window=86_400_000_000
    )
    assert [(w["start"], w["value"]) for w in out["windows"]] == [("2024-02-05T00:00:00Z", "8")]


def test_catalog_is_idempotent_and_meters_immutable(metered: Store) -> None:
    again = apply_catalog(metered, CATALOG, NOW_US)
    assert again.added == [] and len(again.unchanged) == 4
    changed = {"meters": [dict(CATALOG["meters"][0], aggregation="sum", property="x")]}
    from meterline.domain.errors import MeterlineError

    with pytest.raises(MeterlineError, match="immutable"):
        apply_catalog(metered, changed, NOW_US)
