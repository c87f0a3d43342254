"""Every ingestion rule of DESIGN §3 and its stable error code (pure domain)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from meterline.domain.errors import ErrorCode
from meterline.domain.events import (
    MAX_EVENT_TIME_US,
    Event,
    Limits,
    Rejection,
    validate_bytes,
    validate_object,
)
from meterline.domain.timestamps import format_us, parse_rfc3339

NOW = parse_rfc3339("2024-02-10T00:00:00Z")
GOOD = {
    "event_id": "evt_001",
    "customer_id": "acme",
    "event_type": "api_call",
    "event_time": "2024-02-01T14:23:45.123Z",
    "properties": {"tokens": 1200, "region": "eu"},
    "source": "gateway",
}


def with_(**changes: object) -> bytes:
    e = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            e.pop(k)
        else:
            e[k] = v
    return json.dumps(e).encode()


BAD = [
    ("malformed json", b'{"event_id": "x", ', ErrorCode.INVALID_JSON),
    ("not an object", b"[1, 2]", ErrorCode.INVALID_JSON),
    ("a bare number", b"42", ErrorCode.INVALID_JSON),
    ("missing event_id", with_(event_id=...), ErrorCode.MISSING_FIELD),
    ("missing customer_id", with_(customer_id=...), ErrorCode.MISSING_FIELD),
    ("missing event_type", with_(event_type=...), ErrorCode.MISSING_FIELD),
    ("missing event_time", with_(event_time=...), ErrorCode.MISSING_FIELD),
    ("null event_id", with_(event_id=None), ErrorCode.MISSING_FIELD),
    ("numeric event_id", with_(event_id=17), ErrorCode.INVALID_FIELD),
    ("boolean event_id", with_(event_id=True), ErrorCode.INVALID_FIELD),
    ("empty customer_id", with_(customer_id=""), ErrorCode.INVALID_FIELD),
    ("overlong event_type", with_(event_type="x" * 300), ErrorCode.INVALID_FIELD),
    ("non-object properties", with_(properties=[1, 2]), ErrorCode.INVALID_FIELD),
    ("string properties", with_(properties="tokens=3"), ErrorCode.INVALID_FIELD),
    ("numeric source", with_(source=5), ErrorCode.INVALID_FIELD),
    ("naive timestamp", with_(event_time="2024-02-01T14:23:45"), ErrorCode.INVALID_EVENT_TIME),
    ("space separator", with_(event_time="2024-02-01 14:23:45Z"), ErrorCode.INVALID_EVENT_TIME),
    ("date only", with_(event_time="2024-02-01"), ErrorCode.INVALID_EVENT_TIME),
    ("epoch number", with_(event_time=1706797425), ErrorCode.INVALID_EVENT_TIME),
    ("epoch string", with_(event_time="1706797425"), ErrorCode.INVALID_EVENT_TIME),
    ("boolean time", with_(event_time=True), ErrorCode.INVALID_EVENT_TIME),
    ("unparseable", with_(event_time="yesterday"), ErrorCode.INVALID_EVENT_TIME),
    ("impossible date", with_(event_time="2024-02-30T00:00:00Z"), ErrorCode.INVALID_EVENT_TIME),
    ("bad offset", with_(event_time="2024-02-01T00:00:00+25:00"), ErrorCode.INVALID_EVENT_TIME),
    ("future", with_(event_time="2024-02-10T00:05:01Z"), ErrorCode.EVENT_IN_FUTURE),
    ("too old", with_(event_time="2024-01-05T23:59:59Z"), ErrorCode.EVENT_TOO_OLD),
    ("huge number", with_(properties={"n": 1e300}), ErrorCode.INVALID_FIELD),
    (
        "oversized",
        with_(properties={"blob": "x" * (64 * 1024)}),
        ErrorCode.PAYLOAD_TOO_LARGE,
    ),
]


@pytest.mark.parametrize(("name", "raw", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_rejected_with_its_code(name: str, raw: bytes, code: ErrorCode) -> None:
    outcome = validate_bytes(raw, now_us=NOW)
    assert isinstance(outcome, Rejection), name
    assert outcome.code == code
    assert outcome.message


def test_good_event_is_normalised_to_utc() -> None:
    ev = validate_bytes(with_(event_time="2024-02-01T15:23:45.123+01:00"), now_us=NOW)
    assert isinstance(ev, Event)
    assert format_us(ev.event_time) == "2024-02-01T14:23:45.123000Z"
    assert ev.source == "gateway"


def test_future_bound_is_five_minutes_inclusive() -> None:
    assert isinstance(validate_bytes(with_(event_time="2024-02-10T00:05:00Z"), now_us=NOW), Event)


def test_backfill_accepts_old_events_but_not_future_ones() -> None:
    old = with_(event_time="2023-06-01T00:00:00Z")
    assert isinstance(validate_bytes(old, now_us=NOW, backfill=True), Event)
    future = with_(event_time="2024-03-01T00:00:00Z")
    out = validate_bytes(future, now_us=NOW, backfill=True)
    assert isinstance(out, Rejection) and out.code == ErrorCode.EVENT_IN_FUTURE


def test_bounds_are_configurable() -> None:
    limits = Limits(max_age_us=0, max_future_us=0, max_event_bytes=100)
    out = validate_bytes(with_(), now_us=NOW, limits=limits)
    assert isinstance(out, Rejection) and out.code == ErrorCode.PAYLOAD_TOO_LARGE


def test_defaults_for_source_and_properties() -> None:
    ev = validate_bytes(with_(source=..., properties=...), now_us=NOW, default_source="cli")
    assert isinstance(ev, Event)
    assert ev.source == "cli" and ev.properties == "{}"


def test_numbers_are_exact_decimals() -> None:
    ev = validate_bytes(with_(properties={"x": 0.1, "y": 1200.0, "z": 1.5e3}), now_us=NOW)
    assert isinstance(ev, Event)
    assert ev.properties == '{"x":0.1,"y":1200,"z":1500}'
    assert ev.to_dict()["properties"]["x"] == Decimal("0.1")


def test_canonical_content_ignores_key_order_and_number_spelling() -> None:
    a = b'{"event_id":"e","customer_id":"c","event_type":"t","event_time":"2024-02-01T00:00:00Z","properties":{"a":1,"b":2.50}}'
    b = b'{"properties":{"b":2.5,"a":1.0},"event_time":"2024-02-01T01:00:00+01:00","event_type":"t","customer_id":"c","event_id":"e"}'
    ea, eb = validate_bytes(a, now_us=NOW), validate_bytes(b, now_us=NOW)
    assert isinstance(ea, Event) and isinstance(eb, Event)
    assert ea.content_hash == eb.content_hash


def test_any_change_of_value_changes_the_content_hash() -> None:
    base = validate_bytes(with_(), now_us=NOW)
    for changed in (
        with_(properties={"tokens": 1201, "region": "eu"}),
        with_(properties={"tokens": "1200", "region": "eu"}),
        with_(customer_id="other"),
        with_(event_time="2024-02-01T14:23:45.124Z"),
    ):
        other = validate_bytes(changed, now_us=NOW)
        assert isinstance(base, Event) and isinstance(other, Event)
        assert base.content_hash != other.content_hash


def test_nanoseconds_truncate_to_microseconds() -> None:
    ev = validate_bytes(with_(event_time="2024-02-01T00:00:00.123456789Z"), now_us=NOW)
    assert isinstance(ev, Event)
    assert format_us(ev.event_time) == "2024-02-01T00:00:00.123456Z"


def _nested(depth: int) -> bytes:
    return b'{"n":' * depth + b"1" + b"}" * depth


EDGE = [
    ("misspelt source", with_(sorce="gateway"), ErrorCode.UNKNOWN_FIELD),
    ("extra field", with_(amount=3), ErrorCode.UNKNOWN_FIELD),
    ("NUL in event_id", with_(event_id="e\x00"), ErrorCode.INVALID_TEXT),
    ("NUL in source", with_(source="s\x00"), ErrorCode.INVALID_TEXT),
    ("lone surrogate", b'{"event_id":"\\ud800","customer_id":"c"}', ErrorCode.INVALID_JSON),
    ("invalid utf-8", b'{"event_id":"\xff","customer_id":"c"}', ErrorCode.INVALID_JSON),
    (
        "after year 9000",
        with_(event_time="9999-12-31T23:59:59-01:00"),
        ErrorCode.INVALID_EVENT_TIME,
    ),
    ("before 1970", with_(event_time="0001-01-01T00:00:00+01:00"), ErrorCode.INVALID_EVENT_TIME),
    ("year zero", with_(event_time="0000-01-01T00:00:00Z"), ErrorCode.INVALID_EVENT_TIME),
    ("non-ascii digits", with_(event_time="٢٠٢٤-02-01T00:00:00Z"), ErrorCode.INVALID_EVENT_TIME),
    ("huge integer", with_(properties={"n": 10**70}), ErrorCode.INVALID_FIELD),
    ("tiny decimal", b'{"event_id":"e","properties":{"n":1e-70}}', ErrorCode.INVALID_FIELD),
    ("1e400", b'{"event_id":"e","properties":{"n":1e400}}', ErrorCode.INVALID_FIELD),
    (
        "too many digits",
        b'{"event_id":"e","properties":{"n":1.' + b"3" * 70 + b"}}",
        ErrorCode.INVALID_FIELD,
    ),
    (
        "5000-digit integer",
        b'{"event_id":"e","properties":{"n":' + b"9" * 5000 + b"}}",
        ErrorCode.INVALID_FIELD,
    ),
    ("33 levels deep", with_(properties=json.loads(_nested(33))), ErrorCode.NESTING_TOO_DEEP),
    (
        "1000 levels deep",
        b'{"event_id":"e","properties":' + _nested(1000) + b"}",
        ErrorCode.NESTING_TOO_DEEP,
    ),
    ("100000 levels deep", b"[" * 100_000 + b"]" * 100_000, ErrorCode.NESTING_TOO_DEEP),
]


@pytest.mark.parametrize(("name", "raw", "code"), EDGE, ids=[b[0] for b in EDGE])
def test_edge_bounds_are_rejected_with_their_code(name: str, raw: bytes, code: ErrorCode) -> None:
    limits = Limits(max_event_bytes=1 << 20)
    outcome = validate_bytes(raw, now_us=NOW, limits=limits, backfill=True)
    assert isinstance(outcome, Rejection), name
    assert outcome.code == code, outcome.message
    assert "\n" not in outcome.message and len(outcome.message) < 500


def test_bounds_hold_for_decoded_objects_too() -> None:
    obj = json.loads(with_(properties={"k": "a\udc80b"}).decode("utf-8", "surrogatepass"))
    out = validate_object(obj, now_us=NOW)
    assert isinstance(out, Rejection) and out.code == ErrorCode.INVALID_TEXT
    out = validate_object(dict(GOOD, sorce="x"), now_us=NOW)
    assert isinstance(out, Rejection) and out.code == ErrorCode.UNKNOWN_FIELD


def test_edges_of_the_supported_range_are_accepted() -> None:
    for t in ("1970-01-01T00:00:00Z", "8999-12-31T23:59:59.999999Z", "1970-01-01T01:00:00+01:00"):
        ev = validate_bytes(with_(event_time=t), now_us=MAX_EVENT_TIME_US, backfill=True)
        assert isinstance(ev, Event), t
    deep = validate_bytes(with_(properties=json.loads(_nested(32))), now_us=NOW)
    assert isinstance(deep, Event)
    big = validate_bytes(with_(properties={"n": 10**60, "d": 1e-60}), now_us=NOW)
    assert isinstance(big, Event)
    assert big.to_dict()["properties"]["d"] == Decimal("1e-60")


def test_a_default_source_that_no_store_can_hold_is_refused() -> None:
    out = validate_bytes(with_(source=...), now_us=NOW, default_source="s\x00")
    assert isinstance(out, Rejection) and out.code == ErrorCode.INVALID_TEXT


def test_nul_inside_properties_is_held_as_a_json_escape() -> None:
    """Properties are stored as canonical JSON text, where NUL is the escape
    \\u0000: both stores hold it, so only ids and source refuse NUL."""
    ev = validate_bytes(with_(properties={"r\x00": "a\x00b"}), now_us=NOW)
    assert isinstance(ev, Event)
    assert "\x00" not in ev.properties and "\\u0000" in ev.properties
