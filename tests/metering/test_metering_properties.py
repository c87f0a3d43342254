"""Properties that make window aggregates trustworthy (DESIGN §4, §10).

Ingestion folds events into per-window states batch by batch, in arrival
order; reconciliation recomputes from the raw log. These must always agree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal, localcontext
from itertools import pairwise
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from meterline.domain.timestamps import US_PER_HOUR, US_PER_MINUTE
from meterline.metering.aggregation import (
    Aggregation,
    State,
    add,
    aggregate,
    empty,
    from_json,
    merge,
    merge_all,
    period_total,
    result,
    to_json,
)
from meterline.metering.meter import Meter
from meterline.metering.values import value_of
from meterline.metering.windows import Window, window_of, windows_between


@dataclass(frozen=True)
class Event:
    event_time: int
    event_id: str
    properties: dict[str, Any]


METERS = [
    Meter(f"m_{kind.value}", "use", kind, None if kind is Aggregation.COUNT else prop)
    for kind, prop in [
        (Aggregation.COUNT, None),
        (Aggregation.SUM, "n"),
        (Aggregation.MIN, "n"),
        (Aggregation.MAX, "n"),
        (Aggregation.UNIQUE_COUNT, "u"),
        (Aggregation.LATEST, "n"),
    ]
]

decimals = st.decimals(min_value=-1000, max_value=1000, places=3)
numbers = st.one_of(st.integers(-(10**6), 10**6), decimals, decimals.map(str))
identities = st.one_of(
    st.integers(-3, 3),
    st.decimals(min_value=-3, max_value=3, places=1),
    st.sampled_from(["1", "1.0", "a", "b", "é"]),
)
# Few distinct instants and ids over six hourly windows, so ties are common.
events_st = st.lists(
    st.builds(
        Event,
        event_time=st.integers(0, 23).map(lambda q: q * 15 * US_PER_MINUTE),
        event_id=st.sampled_from(["e0", "e1", "e2", "e3"]),
        properties=st.fixed_dictionaries({"n": numbers, "u": identities}),
    ),
    max_size=40,
)


def entries(meter: Meter, events: list[Event]) -> list[tuple[int, str, Any]]:
    return [(e.event_time, e.event_id, value_of(meter, e.properties)) for e in events]


def split(items: list[Event], cuts: list[int]) -> list[list[Event]]:
    bounds = [0, *sorted(cuts), len(items)]
    return [items[a:b] for a, b in pairwise(bounds)]


def reference(kind: Aggregation, events: list[Event]) -> Decimal | None:
    """Direct, naive computation from raw properties, independent of the state machinery."""
    nums = [Decimal(e.properties["n"]) for e in events]
    with localcontext() as ctx:
        ctx.prec = 100
        match kind:
            case Aggregation.COUNT:
                return Decimal(len(events))
            case Aggregation.SUM:
                return sum(nums, Decimal(0))
            case Aggregation.MIN:
                return min(nums, default=None)
            case Aggregation.MAX:
                return max(nums, default=None)
            case Aggregation.UNIQUE_COUNT:
                return Decimal(len(distinct(events)))
            case Aggregation.LATEST:
                keyed = [(e.event_time, e.event_id, n) for e, n in zip(events, nums, strict=True)]
                return max(keyed)[2] if keyed else None
    raise AssertionError(kind)


def distinct(events: list[Event]) -> set[tuple[str, object]]:
    """Distinct values as JSON sees them: numbers by value, strings by text."""
    out: set[tuple[str, object]] = set()
    for e in events:
        raw = e.properties["u"]
        out.add(("s", raw) if isinstance(raw, str) else ("n", Decimal(raw)))
    return out


def ingest(meter: Meter, batches: list[list[Event]]) -> dict[Window, State]:
    """What the store does: per batch, a partial state per window merged into the stored one."""
    stored: dict[Window, State] = {}
    for batch in batches:
        partial: dict[Window, State] = defaultdict(lambda: empty(meter.aggregation))
        for e in batch:
            w = window_of(e.event_time, meter.window_us)
            partial[w] = add(partial[w], e.event_time, e.event_id, value_of(meter, e.properties))
        for w, state in partial.items():
            # Round-trip through storage text, as the store keeps canonical JSON.
            previous = stored.get(w, empty(meter.aggregation))
            stored[w] = from_json(to_json(merge(previous, state)))
    return stored


@given(events=events_st, data=st.data())
def test_any_order_and_any_batch_split_gives_the_same_state(
    events: list[Event], data: st.DataObject
) -> None:
    arrived = data.draw(st.permutations(events))
    cuts = data.draw(st.lists(st.integers(0, len(events)), max_size=6))
    batches = split(arrived, cuts)
    for meter in METERS:
        kind = meter.aggregation
        whole = aggregate(kind, entries(meter, events))
        per_batch = [aggregate(kind, entries(meter, b)) for b in batches]
        assert to_json(merge_all(kind, per_batch)) == to_json(whole)
        assert to_json(merge_all(kind, per_batch[::-1])) == to_json(whole)
        by_window = ingest(meter, batches)
        assert to_json(merge_all(kind, by_window.values())) == to_json(whole)
        assert result(whole) == reference(kind, events)


@given(events=events_st, data=st.data())
def test_period_total_over_windows_equals_raw_events_of_the_period(
    events: list[Event], data: st.DataObject
) -> None:
    start_h = data.draw(st.integers(0, 6))
    end_h = data.draw(st.integers(start_h, 6))
    period = (start_h * US_PER_HOUR, end_h * US_PER_HOUR)
    in_period = [e for e in events if period[0] <= e.event_time < period[1]]
    arrived = data.draw(st.permutations(events))
    batches = split(arrived, data.draw(st.lists(st.integers(0, len(events)), max_size=4)))
    for meter in METERS:
        stored = ingest(meter, batches)
        windows = windows_between(*period, meter.window_us)
        states = [stored[w] for w in windows if w in stored]
        assert period_total(meter.aggregation, states) == reference(meter.aggregation, in_period)


@given(events=events_st)
def test_unique_count_over_a_period_counts_distinct_identities(events: list[Event]) -> None:
    meter = METERS[4]
    assert meter.aggregation is Aggregation.UNIQUE_COUNT
    stored = ingest(meter, [events])
    total = period_total(Aggregation.UNIQUE_COUNT, stored.values())
    assert total == len(distinct(events))
    assert total == len({value_of(meter, e.properties) for e in events})
    # Adding window counts instead would over-count whenever a value spans windows.
    summed = sum((result(s) or Decimal(0) for s in stored.values()), Decimal(0))
    assert summed >= (total or 0)


@given(a=events_st, b=events_st, c=events_st)
def test_merge_is_associative_and_commutative_with_identity(
    a: list[Event], b: list[Event], c: list[Event]
) -> None:
    for meter in METERS:
        kind = meter.aggregation
        x, y, z = (aggregate(kind, entries(meter, evs)) for evs in (a, b, c))
        assert to_json(merge(x, merge(y, z))) == to_json(merge(merge(x, y), z))
        assert to_json(merge(x, y)) == to_json(merge(y, x))
        assert merge(x, empty(kind)) == x
        assert from_json(to_json(x)) == x
