"""Hypothesis on both backends (DESIGN §4): the bitemporal usage index gives
byte-identical documents and usage to a raw fold of the events, at any cutoff.

Generated histories interleave batches of events (out of order, late, some
backfilled), retractions and a meter applied after its events; the catalog
has every aggregation, a group_by, 1m/1h/1d windows, a mid-hour price change,
and customers in UTC, +05:30 (Asia/Kolkata) and a DST zone (America/New_York,
which changes offset on 2024-03-10). At cutoffs drawn from the history (after
each fact, and any seq at all, which may fall inside a batch; invoices issued
mid-history append checkpoints, month rollup passes fold whole months), every invoice
body computed from the index equals the one computed from raw events, and the
window index folded at K equals the windows recomputed from raw events at K.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import reset
from tests.support import event, ingest

from meterline.domain.canonical import dumps
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339, to_datetime
from meterline.metering import to_json
from meterline.services import invoicing, rollups
from meterline.services.catalog import apply_catalog
from meterline.services.retraction import retract_event
from meterline.store import sequence, usage_index
from meterline.store.database import Store
from meterline.store.meter_catalog import load_meters
from meterline.store.usage_index import folded_windows
from meterline.store.window_index import recompute

NOW = "2024-03-20T00:00:00Z"
NOW_US = parse_rfc3339(NOW)
METERS = [
    {"code": "calls", "event_type": "call", "aggregation": "count"},
    {
        "code": "tokens",
        "event_type": "call",
        "aggregation": "sum",
        "property": "n",
        "group_by": ["m"],
    },
    {"code": "peak", "event_type": "call", "aggregation": "max", "property": "n", "window": "1d"},
    {"code": "low", "event_type": "call", "aggregation": "min", "property": "n", "window": "1m"},
    {"code": "users", "event_type": "call", "aggregation": "unique_count", "property": "u"},
    {"code": "last", "event_type": "call", "aggregation": "latest", "property": "n"},
]
LATE_METER = {"code": "later", "event_type": "call", "aggregation": "sum", "property": "n"}


def _charges(meters: list[dict[str, Any]], price: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in meters:
        if m["code"] == "calls":
            tiers = [{"up_to": 5, "unit_price": "0.5"}, {"up_to": None, "unit_price": price}]
            out.append({"code": "c_calls", "meter": "calls", "model": "graduated", "tiers": tiers})
        else:
            out.append(
                {
                    "code": f"c_{m['code']}",
                    "meter": m["code"],
                    "model": "per_unit",
                    "unit_price": price,
                }
            )
    return out


V1 = {"version": "v1", "effective_from": "2024-01-01T00:00:00Z", "charges": _charges(METERS, "0.1")}
# A mid-hour price change inside March; it also prices the meter applied later.
V2 = {
    "version": "v2",
    "effective_from": "2024-03-05T10:30:00Z",
    "retroactive": True,  # March may be invoiced (forced) by then
    "reason": "new prices",
    "charges": _charges([*METERS, LATE_METER], "0.07"),
}
CUSTOMERS = [
    {
        "id": cid,
        "name": cid,
        "currency": "USD",
        "timezone": tz,
        "tax_rate": "0.2",
        "subscriptions": [{"price_book": "std", "start": "2024-01-01T00:00:00Z"}],
    }
    for cid, tz in (("utc", "UTC"), ("ist", "Asia/Kolkata"), ("ny", "America/New_York"))
]


def _catalog(meters: list[dict[str, Any]], versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "meters": meters,
        "price_books": [{"code": "std", "currency": "USD", "versions": versions}],
        "customers": CUSTOMERS,
    }


# Events from 2024-02-27 to 2024-03-12 (UTC minutes): month ends in three
# zones, the DST change, and the price change all fall inside.
START_US = parse_rfc3339("2024-02-27T00:00:00Z")
SPAN_MINUTES = 14 * 1440


def _time(minute: int, second: int) -> str:
    from meterline.domain.timestamps import format_us

    return format_us(START_US + minute * 60_000_000 + second * 1_000_000)


call = st.tuples(
    st.integers(0, SPAN_MINUTES - 1),
    st.integers(0, 59),
    st.sampled_from(["utc", "ist", "ny"]),
    st.integers(-20, 500) | st.sampled_from(["0.1", "2.25", "-3.5"]),
    st.sampled_from(["a", "b"]),
    st.integers(0, 4),
)
step = st.one_of(
    st.tuples(st.just("events"), st.lists(call, min_size=1, max_size=12), st.booleans()),
    st.tuples(st.just("retract"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("meter"), st.none(), st.none()),
    st.tuples(st.just("issue"), st.sampled_from(["2024-02", "2024-03"]), st.none()),
    st.tuples(st.just("rollup"), st.none(), st.booleans()),
)


def _event(i: int, c: tuple[Any, ...]) -> dict[str, Any]:
    minute, second, customer, n, m, u = c
    props: dict[str, Any] = {"n": n, "u": f"user{u}"}
    if m == "a":  # "b" leaves the group_by property out: its own group (null)
        props["m"] = "a"
    return event(f"e{i}", customer=customer, type_="call", time=_time(minute, second), props=props)


def _play(store: Store, steps: list[Any]) -> list[int]:
    """Apply the history; return the seq after each fact (the cutoffs documents use)."""
    reset(store)
    apply_catalog(store, _catalog(METERS, [V1]), NOW_US)
    clock = FixedClock(to_datetime(NOW_US))
    with store.read() as conn:
        cutoffs = [sequence.current(conn)]
    ids: list[str] = []
    meter_applied = False
    n = 0
    for kind, arg, flag in [*steps, ("meter", None, None)]:
        if kind == "events":
            batch = [_event(n + j, c) for j, c in enumerate(arg)]
            n += len(batch)
            ids += [e["event_id"] for e in batch]
            ingest(store, clock, batch, batch_size=5, backfill=bool(flag))
        elif kind == "retract" and ids:
            retract_event(store, "default", ids[arg % len(ids)], "dispute", NOW_US)
        elif kind == "issue":  # forced: appends checkpoints at its K (see below)
            invoicing.issue(store, arg, NOW_US, force=True)
        elif kind == "rollup":  # month rollup passes: later cutoffs read from them
            rollups.roll_up(store, NOW_US, None if flag else ["2024-02", "2024-03"])
            continue  # derived rows, no fact: no new cutoff
        elif kind == "meter" and not meter_applied:
            meter_applied = True
            apply_catalog(store, _catalog([*METERS, LATE_METER], [V1, V2]), NOW_US)
        else:
            continue
        with store.read() as conn:
            cutoffs.append(sequence.current(conn))
    return cutoffs


SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(steps=st.lists(step, min_size=1, max_size=8), data=st.data())
def test_index_documents_and_usage_equal_a_raw_fold_at_any_cutoff(
    store: Store, steps: list[Any], data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Checkpoint every bucket read from more than one row, so that issuing
    # mid-history appends checkpoints the later cutoffs fold from.
    monkeypatch.setattr(usage_index, "CHECKPOINT_AFTER", 1)
    cutoffs = _play(store, steps)
    last = cutoffs[-1]
    picks = data.draw(
        st.lists(st.sampled_from(cutoffs), min_size=1, max_size=3)
        | st.lists(st.integers(cutoffs[0], last), min_size=1, max_size=2),
        label="cutoffs",
    )
    with store.read() as conn:
        for k in sorted({*picks, last}):
            for customer in ("utc", "ist", "ny"):
                for label in ("2024-02", "2024-03"):
                    indexed = invoicing.compute_body(conn, customer, label, k)
                    raw = invoicing.compute_body(conn, customer, label, k, raw=True)
                    assert dumps(indexed) == dumps(raw), (k, customer, label)
            stored = {key: v for key, v in folded_windows(conn, k).items() if v[1]}
            fresh = {}
            for meter in load_meters(conn, k):
                for key, row in recompute(conn, meter, as_of=k).items():
                    fresh[key] = (to_json(row.state), row.event_count)
            if not any(s > k and f <= k for s, f in _straddling(conn)):
                assert stored == fresh, k


def _straddling(conn: Any) -> list[tuple[int, int]]:
    from sqlalchemy import text

    return [
        (int(r[0]), int(r[1])) for r in conn.execute(text("SELECT seq, first_seq FROM usage_index"))
    ]


def test_a_raw_fold_sees_every_boundary_kind(store: Store) -> None:
    """One fixed history through every piece kind: day rollups, windows, and raw
    events at a +05:30 month start and at the mid-hour price change."""
    steps = [
        (
            "events",
            [
                (m, 7, c, 3, "a", 1)
                for m in range(0, SPAN_MINUTES, 97)
                for c in ("utc", "ist", "ny")
            ],
            False,
        ),
        ("retract", 5, None),
        ("events", [(4000, 1, "ist", "2.25", "b", 2), (12000, 3, "ny", -3, "a", 3)], True),
        ("retract", 40, None),
    ]
    cutoffs = _play(store, steps)
    with store.read() as conn:
        rows = _straddling(conn)
        for k in cutoffs:
            assert not any(f <= k < s for s, f in rows)  # the index answers every fact's K
            for customer in ("utc", "ist", "ny"):
                for label in ("2024-02", "2024-03"):
                    indexed = invoicing.compute_body(conn, customer, label, k)
                    raw = invoicing.compute_body(conn, customer, label, k, raw=True)
                    assert dumps(indexed) == dumps(raw), (k, customer, label)
                    assert indexed["format"] == 2
        final = invoicing.compute_body(conn, "ist", "2024-03", cutoffs[-1])
    lines = {ln["charge"] for ln in final["lines"]}
    assert {"c_calls", "c_tokens", "c_peak", "c_low", "c_users", "c_last", "c_later"} <= lines
    assert all("events_digest" not in (ln.get("usage") or {}) for ln in final["lines"])
