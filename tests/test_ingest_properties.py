"""Hypothesis: ingestion is order-, batch- and repetition-independent."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import reset
from tests.support import event, ingest, stored

from meterline.domain.clock import FixedClock
from meterline.store.database import Store

PROPERTY_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

event_st = st.builds(
    lambda i, c, h, n, src: event(
        f"e{i}",
        customer=f"c{c}",
        time=f"2024-02-0{1 + h % 9}T{h % 24:02d}:00:00Z",
        props={"n": n},
        source=src,
    ),
    i=st.integers(0, 10_000),
    c=st.integers(0, 3),
    h=st.integers(0, 200),
    n=st.integers(-5, 10**12)
    | st.decimals(places=3, allow_nan=False, allow_infinity=False, min_value=-1000, max_value=1000),
    src=st.sampled_from([None, "gw", "batch"]),
)


def unique_events(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, Any], dict[str, Any]] = {}
    for e in evs:
        seen.setdefault((e.get("source"), e["event_id"]), e)
    return list(seen.values())


def content(store: Store) -> dict[tuple[str, str], str]:
    return {(src, eid): h for _, src, eid, h in stored(store)}


@PROPERTY_SETTINGS
@given(
    evs=st.lists(event_st, min_size=1, max_size=40).map(unique_events),
    data=st.data(),
)
def test_any_order_any_batches_any_repeats_same_store(
    store: Store, clock: FixedClock, evs: list[dict[str, Any]], data: st.DataObject
) -> None:
    reset(store)
    ingest(store, clock, evs, batch_size=len(evs))
    reference = content(store)
    reference_seq_order = stored(store)

    # The same arrival order, split differently and sent several times:
    # identical rows, identical seq order.
    reset(store)
    size = data.draw(st.integers(1, len(evs)), label="batch size")
    for _ in range(data.draw(st.integers(1, 3), label="repeats")):
        ingest(store, clock, evs, batch_size=size)
    assert stored(store) == reference_seq_order

    # Any other arrival order with repeats mixed in: the same stored events.
    reset(store)
    shuffled = data.draw(st.permutations(evs), label="order")
    extra = data.draw(st.lists(st.sampled_from(evs), max_size=10), label="resends")
    ingest(store, clock, [*shuffled, *extra], batch_size=data.draw(st.integers(1, 50)))
    assert content(store) == reference
    assert [r[0] for r in stored(store)] == list(range(1, len(evs) + 1))


BAD_LINES = [
    "{not json",
    '{"event_id": "x"}',
    '{"event_id": "y", "customer_id": "c", "event_type": "t", "event_time": 17}',
    '{"event_id": "z", "customer_id": "c", "event_type": "t", "event_time": "2024-02-01T00:00:00"}',
    '{"event_id": "w", "customer_id": "c", "event_type": "t", "event_time": "2024-02-01T00:00:00Z", "properties": [1]}',
]


@PROPERTY_SETTINGS
@given(
    good=st.lists(event_st, min_size=0, max_size=25).map(unique_events),
    bad=st.lists(st.sampled_from(BAD_LINES), min_size=1, max_size=8),
    data=st.data(),
)
def test_a_batch_with_bad_events_stores_exactly_the_good_ones(
    store: Store, clock: FixedClock, good: list[dict[str, Any]], bad: list[str], data: st.DataObject
) -> None:
    reset(store)
    mixed: list[dict[str, Any] | str] = data.draw(st.permutations([*good, *bad]), label="mixed")
    report = ingest(store, clock, mixed, batch_size=data.draw(st.integers(1, 40)))
    assert report.accepted == len(good)
    assert report.rejected == len(bad)
    assert {eid for _, _, eid, _ in stored(store)} == {e["event_id"] for e in good}
    positions = [i for i, item in enumerate(mixed) if isinstance(item, str)]
    assert [r.index for r in report.rejects] == positions
