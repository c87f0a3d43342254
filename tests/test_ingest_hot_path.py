"""Hypothesis: the ingest hot path's shortcuts give exactly what the reference
paths give (issue 13).

- msgspec's sorted-key encoding (events.encode_json, the stored `properties`
  text and the content hash) is byte-identical to domain/canonical.py;
- the properties validation decoded and carried on the Event equal the
  decoding of the stored canonical text, and fold to the same index deltas;
- the int fast path of number_of equals the general path.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meterline.domain import canonical
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import (
    Event,
    content_hash_of,
    decode_json,
    encode_json,
    validate_bytes,
    validate_object,
)
from meterline.domain.timestamps import parse_rfc3339
from meterline.metering import parse_meters
from meterline.metering.values import number_of
from meterline.store.usage_index import fold_events

NOW = parse_rfc3339("2024-03-01T00:00:00Z")

_keys = st.text(min_size=0, max_size=8)
_decimals = st.decimals(
    allow_nan=False, allow_infinity=False, min_value=-(10**20), max_value=10**20, places=6
)
_scalars = (
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | _decimals | st.text(max_size=12)
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=12,
)
_props = st.dictionaries(_keys, _values, max_size=6)


def _canonicalised(value: Any) -> Any:
    """What validation stores: numbers as their canonical Decimal (decode of the text)."""
    return decode_json(encode_json(value))


@settings(max_examples=300, deadline=None)
@given(_props)
def test_msgspec_sorted_encoding_is_the_canonical_json(props: dict[str, Any]) -> None:
    value = _canonicalised(props)
    assert encode_json(value) == canonical.dumps(value)
    assert encode_json(props) == canonical.dumps(props)


@settings(max_examples=200, deadline=None)
@given(
    _props,
    st.text(min_size=1, max_size=10),
    st.text(min_size=1, max_size=10),
    st.integers(0, 2**50),
)
def test_content_hash_is_the_canonical_hash(
    props: dict[str, Any], event_id: str, customer: str, t: int
) -> None:
    text = encode_json(props).decode()
    expected = canonical.content_hash(
        {
            "customer_id": customer,
            "event_id": event_id,
            "event_time": t,
            "event_type": "x",
            "properties": decode_json(text),
            "source": "s",
        }
    )
    assert content_hash_of("s", event_id, customer, "x", t, text) == expected


_event_props = st.fixed_dictionaries(
    {"tokens": st.integers(0, 10**12) | _decimals.map(abs), "model": st.sampled_from("abc")},
    optional={"extra": _values},
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(_event_props, st.integers(0, 86_400 * 3), st.integers(0, 4)), max_size=30)
)
def test_carried_properties_fold_like_the_stored_text(
    items: list[tuple[dict[str, Any], int, int]],
) -> None:
    meters = parse_meters(
        [
            {"code": "calls", "event_type": "llm", "aggregation": "count", "window": "1h"},
            {
                "code": "calls_by_model",
                "event_type": "llm",
                "aggregation": "count",
                "group_by": ["model"],
            },
            {
                "code": "tokens",
                "event_type": "llm",
                "aggregation": "sum",
                "property": "tokens",
                "group_by": ["model"],
                "window": "1h",
            },
            {"code": "peak", "event_type": "llm", "aggregation": "max", "property": "tokens"},
        ]
    )
    carried: list[tuple[int, Event]] = []
    stored: list[tuple[int, Event]] = []
    for i, (props, seconds, customer) in enumerate(items, start=1):
        raw = encode_json(
            {
                "event_id": f"e{i}",
                "customer_id": f"c{customer}",
                "event_type": "llm",
                "event_time": "2024-02-20T00:00:00Z",
                "properties": props,
            }
        )
        got = validate_bytes(raw, now_us=NOW, limits=_limits())
        assert isinstance(got, Event)
        got = Event(  # the time varied without formatting it
            got.source,
            got.event_id,
            got.customer_id,
            got.event_type,
            got.event_time + seconds * 1_000_000,
            got.properties,
            got.content_hash,
            got.parsed,
        )
        assert got.parsed == decode_json(got.properties)
        carried.append((i, got))
        stored.append((i, Event(*[getattr(got, f) for f in _STORED_FIELDS])))
    by_type = {"llm": meters}
    assert fold_events(by_type, carried) == fold_events(by_type, stored)


_STORED_FIELDS = (
    "source",
    "event_id",
    "customer_id",
    "event_type",
    "event_time",
    "properties",
    "content_hash",
)


def _limits() -> Any:
    from meterline.domain.events import Limits

    return Limits(max_age_us=10**18)


@settings(max_examples=100, deadline=None)
@given(_props)
def test_validated_object_carries_its_canonical_properties(props: dict[str, Any]) -> None:
    obj = {
        "event_id": "e",
        "customer_id": "c",
        "event_type": "t",
        "event_time": "2024-02-20T00:00:00Z",
        "properties": props,
    }
    got = validate_object(obj, now_us=NOW)
    if isinstance(got, Event):
        assert got.parsed == decode_json(got.properties)
        assert encode_json(got.parsed).decode() == got.properties


def _read(meter: Any, raw: Any) -> str:
    try:
        return str(number_of(meter, {"n": raw}))
    except MeterlineError as exc:
        return exc.code


@given(st.integers(-(10**31), 10**31))
def test_int_fast_path_reads_numbers_like_the_general_path(raw: int) -> None:
    (meter,) = parse_meters(
        [{"code": "s", "event_type": "t", "aggregation": "sum", "property": "n"}]
    )
    fast = _read(meter, raw)  # an int: the fast path
    assert fast == _read(meter, Decimal(raw))  # the same number as a Decimal: the general path
    assert (fast == ErrorCode.INVALID_PROPERTY) == (abs(raw) >= 10**30)


@given(_decimals | st.integers(-(10**30), 10**30), st.integers(0, 10**9))
def test_index_state_texts_are_to_json(total: Decimal | int, count: int) -> None:
    from meterline.metering.aggregation import CountState, SumState, to_json
    from meterline.store.usage_index import _state_text

    sum_state = SumState(Decimal(canonical.dumps(total).decode()))
    assert _state_text(sum_state) == to_json(sum_state)
    assert _state_text(CountState(count)) == to_json(CountState(count))


_bucket_keys = st.tuples(
    st.sampled_from(["api_calls", "tokens", "a", "b b"]),
    st.text(max_size=4),
    st.sampled_from(["w", "d"]),
    st.sampled_from(["[]", '["x"]', '["y"]', "[null]"]),
    st.integers(0, 10**15),
)


@given(st.lists(_bucket_keys, max_size=60, unique=True))
def test_index_rows_are_written_in_tuple_order(keys: list[Any]) -> None:
    """The stable one-field passes order keys exactly as sorting the tuples does."""
    from meterline.metering.aggregation import CountState
    from meterline.metering.bitemporal import RowKind
    from meterline.store.usage_index import Delta, _sorted_keys

    deltas = {k: Delta(RowKind.ADD, CountState(1), 1, 1, 1) for k in keys}
    assert _sorted_keys(deltas) == sorted(keys)


def test_the_collector_is_paused_per_batch_and_restored() -> None:
    import gc

    from meterline.gcpause import gc_paused

    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():  # nested (the parallel writer inside a serial batch)
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()  # disabled by someone else: stays disabled
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


_stamps = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, z: (
        f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{z}"
    ),
    st.integers(0, 9999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.sampled_from("Tt "),
    st.integers(0, 25),
    st.integers(0, 61),
    st.integers(0, 61),
    st.one_of(st.just(""), st.from_regex(r"\.[0-9]{0,10}", fullmatch=True)),
    st.sampled_from(["Z", "z", "+00:00", "-01:30", ""]),
)


def _parse_or_error(parse: Any, text: str) -> Any:
    from meterline.domain.timestamps import InvalidTimestamp

    try:
        return parse(text)
    except InvalidTimestamp as exc:
        return ("error", str(exc))


@settings(max_examples=1000)
@given(_stamps | st.text(max_size=32))
def test_the_fromisoformat_fast_path_parses_like_the_strict_parser(text: str) -> None:
    """Same instant or the same error message as the regular-expression parser,
    on valid stamps and on every near miss (bad dates, hour 24, second 60,
    1 to 10 fractional digits, lower case t and z, offsets, other text)."""
    from meterline.domain.timestamps import parse_rfc3339, parse_rfc3339_strictly

    assert _parse_or_error(parse_rfc3339, text) == _parse_or_error(parse_rfc3339_strictly, text)


def test_the_fast_path_truncates_past_the_microsecond() -> None:
    from meterline.domain.timestamps import parse_rfc3339, parse_rfc3339_strictly

    for text in ("2024-01-01T23:59:59.9999999Z", "2024-12-31T23:59:59.999999999Z"):
        assert parse_rfc3339(text) == parse_rfc3339_strictly(text)


def test_overlapping_batches_still_collect_cycles(monkeypatch: Any) -> None:
    """A server whose batches always overlap never ends the pause: a batch that
    leaves after MAX_PAUSE_S collects, so cycles made meanwhile are freed."""
    import gc
    import weakref

    from meterline import gcpause

    class Node:
        ref: Any = None

    monkeypatch.setattr(gcpause, "MAX_PAUSE_S", 0.0)
    with gcpause.gc_paused():  # another request, in flight throughout
        cycle = Node()
        cycle.ref = cycle
        gone = weakref.ref(cycle)
        del cycle
        with gcpause.gc_paused():
            pass  # this one leaves while the other is still inside: it collects
        assert gone() is None
        assert not gc.isenabled()
    assert gc.isenabled()
