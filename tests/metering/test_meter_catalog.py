"""Validation of the catalog ``meters`` list (DESIGN §12)."""

from __future__ import annotations

from typing import Any

import pytest

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import US_PER_DAY, US_PER_HOUR, US_PER_MINUTE
from meterline.metering.aggregation import Aggregation
from meterline.metering.meter import (
    DEFAULT_ALLOWED_LATENESS_US,
    DEFAULT_WINDOW_US,
    Meter,
    format_duration,
    parse_meters,
)

OK: dict[str, Any] = {
    "code": "tokens",
    "event_type": "llm_call",
    "aggregation": "sum",
    "property": "tokens",
}
REMOVE = object()


def with_(**changes: Any) -> dict[str, Any]:
    """OK with some fields changed (or dropped with REMOVE)."""
    meter = dict(OK, **changes)
    return {k: v for k, v in meter.items() if v is not REMOVE}


def test_design_example_parses_with_defaults() -> None:
    meters = parse_meters(
        [
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
        ]
    )
    assert meters == [
        Meter("api_calls", "api_call", Aggregation.COUNT, None, (), US_PER_HOUR, 3 * US_PER_HOUR),
        Meter(
            "tokens",
            "llm_call",
            Aggregation.SUM,
            "tokens",
            ("model",),
            US_PER_HOUR,
            3 * US_PER_HOUR,
        ),
    ]
    assert DEFAULT_WINDOW_US == US_PER_HOUR
    assert DEFAULT_ALLOWED_LATENESS_US == 3 * US_PER_HOUR


@pytest.mark.parametrize("kind", [k.value for k in Aggregation if k is not Aggregation.COUNT])
def test_every_property_aggregation_parses(kind: str) -> None:
    (meter,) = parse_meters([with_(aggregation=kind)])
    assert meter.aggregation == kind
    assert meter.property == "tokens"


@pytest.mark.parametrize(
    ("window", "size"), [("1m", US_PER_MINUTE), ("1h", US_PER_HOUR), ("1d", US_PER_DAY)]
)
def test_window_sizes(window: str, size: int) -> None:
    assert parse_meters([with_(window=window)])[0].window_us == size


def test_lateness_durations_and_null_property_for_count() -> None:
    (a, b, c) = parse_meters(
        [
            with_(code="a", allowed_lateness="90m"),
            with_(code="b", allowed_lateness="0s"),
            {
                "code": "c",
                "event_type": "x",
                "aggregation": "count",
                "property": None,
                "group_by": None,
            },
        ]
    )
    assert a.allowed_lateness_us == 90 * US_PER_MINUTE
    assert b.allowed_lateness_us == 0
    assert (c.property, c.group_by) == (None, ())


def test_empty_list_is_fine() -> None:
    assert parse_meters([]) == []


def test_round_trip_and_content_hash() -> None:
    (meter,) = parse_meters([with_(group_by=["model", "region"], window="1d")])
    assert parse_meters([meter.to_catalog()]) == [meter]
    # Equal definitions hash equal whatever the spelling of the duration...
    (in_minutes,) = parse_meters([with_(allowed_lateness="180m")])
    (in_hours,) = parse_meters([with_(allowed_lateness="3h")])
    assert in_minutes.content_hash == in_hours.content_hash
    assert in_hours.to_catalog()["allowed_lateness"] == "3h"
    # ...and any change to the definition changes the hash.
    variants = [
        with_(code="other"),
        with_(event_type="other"),
        with_(aggregation="max"),
        with_(property="other"),
        with_(group_by=["model"]),
        with_(window="1m"),
        with_(allowed_lateness="2h"),
    ]
    hashes = {m.content_hash for m in parse_meters([OK])}
    for variant in variants:
        hashes.add(parse_meters([variant])[0].content_hash)
    assert len(hashes) == 1 + len(variants)
    assert len(in_hours.content_hash) == 64


CASES: list[tuple[str, Any, str, str]] = [
    ("not a list", {"code": "x"}, "meters", "expected a list"),
    ("a string is not a list", "tokens", "meters", "expected a list"),
    ("entry not a mapping", ["tokens"], "meters[0]", "expected a mapping"),
    ("unknown field", [with_(windw="1h")], "meters[0].windw", "unknown field"),
    ("code missing", [with_(code=REMOVE)], "meters[0]", "missing field 'code'"),
    ("event_type missing", [with_(event_type=REMOVE)], "meters[0]", "missing field 'event_type'"),
    (
        "aggregation missing",
        [with_(aggregation=REMOVE)],
        "meters[0]",
        "missing field 'aggregation'",
    ),
    ("code empty", [with_(code="")], "meters[0].code", "non-empty string"),
    ("code not a string", [with_(code=7)], "meters[0].code", "non-empty string"),
    ("code with a space", [with_(code="api calls")], "meters[0].code", "letters, digits"),
    ("code with padding", [with_(code=" api")], "meters[0].code", "leading or trailing"),
    ("code too long", [with_(code="a" * 65)], "meters[0].code", "at most 64"),
    ("event_type empty", [with_(event_type="")], "meters[0].event_type", "non-empty"),
    ("event_type padded", [with_(event_type="x ")], "meters[0].event_type", "trailing spaces"),
    ("aggregation unknown", [with_(aggregation="avg")], "meters[0].aggregation", "must be one of"),
    ("aggregation not str", [with_(aggregation=["sum"])], "meters[0].aggregation", "one of"),
    (
        "property missing",
        [with_(property=REMOVE)],
        "meters[0].property",
        "required for aggregation sum",
    ),
    ("property null", [with_(property=None)], "meters[0].property", "required"),
    ("property empty", [with_(property="")], "meters[0].property", "non-empty"),
    (
        "property on count",
        [with_(aggregation="count")],
        "meters[0].property",
        "count reads no property",
    ),
    ("group_by a string", [with_(group_by="model")], "meters[0].group_by", "must be a list"),
    ("group_by entry", [with_(group_by=["model", 3])], "meters[0].group_by[1]", "non-empty string"),
    ("group_by duplicate", [with_(group_by=["m", "m"])], "meters[0].group_by[1]", "duplicate"),
    ("window unknown", [with_(window="2h")], "meters[0].window", "must be one of 1m, 1h, 1d"),
    ("window not str", [with_(window=1)], "meters[0].window", "must be one of"),
    (
        "lateness words",
        [with_(allowed_lateness="3 hours")],
        "meters[0].allowed_lateness",
        "duration",
    ),
    ("lateness number", [with_(allowed_lateness=3)], "meters[0].allowed_lateness", "duration"),
    (
        "lateness negative",
        [with_(allowed_lateness="-1h")],
        "meters[0].allowed_lateness",
        "duration",
    ),
    (
        "duplicate code",
        [OK, with_(code="other"), with_(aggregation="max")],
        "meters[2].code",
        "duplicate meter code 'tokens' (already defined at meters[0])",
    ),
    ("error in later entry", [OK, with_(code="b", window="5m")], "meters[1].window", "got '5m'"),
]


@pytest.mark.parametrize(("name", "raw", "path", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_validation_errors(name: str, raw: Any, path: str, fragment: str) -> None:
    with pytest.raises(MeterlineError) as excinfo:
        parse_meters(raw)
    error = excinfo.value
    assert error.code is ErrorCode.INVALID_CATALOG
    assert error.details["path"] == path
    assert error.message.startswith(f"{path}: ")
    assert fragment in error.message


def test_meter_invariants_for_programmatic_construction() -> None:
    with pytest.raises(ValueError, match="property is required"):
        Meter("m", "e", Aggregation.SUM, None)
    with pytest.raises(ValueError, match="property is required"):
        Meter("m", "e", Aggregation.COUNT, "p")
    with pytest.raises(ValueError, match="unsupported window"):
        Meter("m", "e", Aggregation.COUNT, None, window_us=2 * US_PER_HOUR)
    with pytest.raises(ValueError, match="negative"):
        Meter("m", "e", Aggregation.COUNT, None, allowed_lateness_us=-1)


def test_meter_window_of_uses_its_size() -> None:
    meter = Meter("m", "e", Aggregation.COUNT, None, window_us=US_PER_DAY)
    assert meter.window_of(US_PER_DAY + 5) == (US_PER_DAY, 2 * US_PER_DAY)


@pytest.mark.parametrize(
    ("us", "text"),
    [
        (0, "0s"),
        (3 * US_PER_HOUR, "3h"),
        (90 * US_PER_MINUTE, "90m"),
        (2 * US_PER_DAY, "2d"),
        (1_500_000, "1500ms"),
        (7, "7us"),
        (45_000_000, "45s"),
    ],
)
def test_format_duration(us: int, text: str) -> None:
    assert format_duration(us) == text
