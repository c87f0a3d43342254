"""Hypothesis on the store: the window index always equals the raw log.

For any set of events, arrival order and batch split, the stored window
states equal a recomputation from raw events, and range totals are the same.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import reset
from tests.support import event, ingest

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339
from meterline.services.catalog import apply_catalog
from meterline.services.retraction import retract_event
from meterline.services.usage import query_usage
from meterline.store.database import Store
from meterline.store.meter_catalog import load_meters
from meterline.store.window_index import recompute

NOW_US = parse_rfc3339("2024-02-10T00:00:00Z")
CATALOG = {
    "meters": [
        {"code": "calls", "event_type": "call", "aggregation": "count"},
        {
            "code": "tokens",
            "event_type": "call",
            "aggregation": "sum",
            "property": "n",
            "group_by": ["m"],
        },
        {
            "code": "peak",
            "event_type": "call",
            "aggregation": "max",
            "property": "n",
            "window": "1d",
        },
        {
            "code": "low",
            "event_type": "call",
            "aggregation": "min",
            "property": "n",
            "window": "1m",
        },
        {"code": "users", "event_type": "call", "aggregation": "unique_count", "property": "u"},
        {"code": "last", "event_type": "call", "aggregation": "latest", "property": "n"},
    ]
}
SETTINGS = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

call = st.builds(
    lambda i, minute, n, m, u: event(
        f"c{i}",
        customer=f"k{i % 2}",
        type_="call",
        time=f"2024-02-0{1 + minute // 1440}T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z",
        props={"n": n, "m": m, "u": f"user{u}"},
    ),
    i=st.integers(0, 10**6),
    minute=st.integers(0, 3 * 1440 - 1),
    n=st.integers(-50, 10**6) | st.sampled_from(["0.1", "2.25", "-3.5"]),
    m=st.sampled_from(["a", "b"]),
    u=st.integers(0, 5),
).filter(lambda e: True)


def unique(evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return list({e["event_id"]: e for e in evs}.values())


def stored_windows(store: Store) -> dict[tuple[str, str, str, int], tuple[str, int]]:
    from meterline.store.usage_index import folded_windows

    with store.read() as conn:
        return {k: v for k, v in folded_windows(conn).items() if v[1] > 0}


def recomputed(store: Store) -> dict[tuple[str, str, str, int], tuple[str, int]]:
    from meterline.metering import to_json

    out = {}
    with store.read() as conn:
        for meter in load_meters(conn):
            for key, row in recompute(conn, meter).items():
                out[key] = (to_json(row.state), row.event_count)
    return out


def totals(store: Store) -> dict[tuple[str, str], Any]:
    out = {}
    with store.read() as conn:
        for meter in ("calls", "tokens", "peak", "low", "users", "last"):
            for customer in ("k0", "k1"):
                u = query_usage(
                    conn,
                    customer=customer,
                    meter_code=meter,
                    from_us=parse_rfc3339("2024-02-01T00:00:00Z"),
                    to_us=parse_rfc3339("2024-02-04T00:00:00Z"),
                    now_us=NOW_US,
                )
                out[(meter, customer)] = (
                    u["total"],
                    tuple((tuple(g["dimensions"].items()), g["total"]) for g in u["groups"]),
                )
    return out


@SETTINGS
@given(evs=st.lists(call, min_size=1, max_size=30).map(unique), data=st.data())
def test_index_equals_raw_recomputation_for_any_arrival(
    store: Store, clock: FixedClock, evs: list[dict[str, Any]], data: st.DataObject
) -> None:
    reset(store)
    apply_catalog(store, CATALOG, NOW_US)
    ingest(store, clock, evs, batch_size=len(evs))
    reference = totals(store)
    assert stored_windows(store) == recomputed(store)

    reset(store)
    apply_catalog(store, CATALOG, NOW_US)
    order = data.draw(st.permutations(evs), label="order")
    resent = data.draw(st.lists(st.sampled_from(evs), max_size=5), label="resent")
    ingest(store, clock, [*order, *resent], batch_size=data.draw(st.integers(1, 10), label="batch"))
    assert stored_windows(store) == recomputed(store)
    assert totals(store) == reference


@SETTINGS
@given(evs=st.lists(call, min_size=2, max_size=20).map(unique), data=st.data())
def test_index_follows_retractions(
    store: Store, clock: FixedClock, evs: list[dict[str, Any]], data: st.DataObject
) -> None:
    reset(store)
    apply_catalog(store, CATALOG, NOW_US)
    ingest(store, clock, evs, batch_size=data.draw(st.integers(1, 10)))
    gone = data.draw(st.lists(st.sampled_from(evs), max_size=4, unique_by=lambda e: e["event_id"]))
    for e in gone:
        retract_event(store, "default", e["event_id"], "test", NOW_US)
    assert stored_windows(store) == recomputed(store)


@SETTINGS
@given(evs=st.lists(call, min_size=1, max_size=25).map(unique))
def test_unique_count_is_distinct_over_the_range(
    store: Store, clock: FixedClock, evs: list[dict[str, Any]]
) -> None:
    reset(store)
    apply_catalog(store, CATALOG, NOW_US)
    ingest(store, clock, evs)
    for customer in ("k0", "k1"):
        expected = len({e["properties"]["u"] for e in evs if e["customer_id"] == customer})
        assert totals(store)[("users", customer)][0] == str(expected)
