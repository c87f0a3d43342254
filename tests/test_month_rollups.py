"""Month rollup passes of the usage index (DESIGN §4), on both backends.

A pass folds each UTC month's day rows, as known at its seq S, into one ``cpt``
row per (customer, meter, group); reads as known at K >= S of a whole month
start from it and fold only the day rows after S. Generated histories (batches
of events over two whole months, late and backfilled, retractions that count
and sum subtract and min/max/latest/unique_count re-fold, a meter applied after
its events, passes at any point) must give byte-identical invoices to a raw
fold at every cutoff, from `compute_body` and from verify's batched
`compute_bodies`; and a pass must actually shorten the read.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from tests.conftest import reset
from tests.support import event, ingest

from meterline.billing import body as typed
from meterline.domain.canonical import dumps
from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import format_us, parse_rfc3339, to_datetime
from meterline.metering.bitemporal import Grain
from meterline.services import invoicing, rollups
from meterline.services.catalog import apply_catalog
from meterline.services.retraction import retract_event
from meterline.store import sequence, usage_index
from meterline.store.database import Store

NOW_US = parse_rfc3339("2024-05-01T00:00:00Z")
METERS = [
    {"code": "calls", "event_type": "call", "aggregation": "count"},
    {
        "code": "tokens",
        "event_type": "call",
        "aggregation": "sum",
        "property": "n",
        "group_by": ["m"],
    },
    {"code": "peak", "event_type": "call", "aggregation": "max", "property": "n", "window": "1m"},
    {"code": "low", "event_type": "call", "aggregation": "min", "property": "n"},
    {"code": "users", "event_type": "call", "aggregation": "unique_count", "property": "u"},
    {"code": "last", "event_type": "call", "aggregation": "latest", "property": "n"},
    {"code": "daily", "event_type": "call", "aggregation": "sum", "property": "n", "window": "1d"},
]
LATE_METER = {"code": "later", "event_type": "call", "aggregation": "sum", "property": "n"}


def _charges(meters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"code": f"c_{m['code']}", "meter": m["code"], "model": "per_unit", "unit_price": "0.1"}
        for m in meters
    ]


V1 = {"version": "v1", "effective_from": "2024-01-01T00:00:00Z", "charges": _charges(METERS)}
# Prices the meter applied later from mid-February on: February's two segments are
# covered by rollup units and single days, March by its month unit.
V2 = {
    "version": "v2",
    "effective_from": "2024-02-14T00:00:00Z",
    "retroactive": True,
    "reason": "a new meter",
    "charges": _charges([*METERS, LATE_METER]),
}


def _catalog(meters: list[dict[str, Any]], versions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "meters": meters,
        "price_books": [{"code": "std", "currency": "USD", "versions": versions}],
        "customers": [
            {
                "id": cid,
                "name": cid,
                "currency": "USD",
                "timezone": "UTC",
                "tax_rate": "0.1",
                "subscriptions": [{"price_book": "std", "start": "2024-01-01T00:00:00Z"}],
            }
            for cid in ("a", "b")
        ],
    }


START_US = parse_rfc3339("2024-02-01T00:00:00Z")
SPAN_MINUTES = (29 + 31) * 1440  # February and March 2024
LABELS = ("2024-02", "2024-03")

call = st.tuples(
    st.integers(0, SPAN_MINUTES - 1),
    st.sampled_from(["a", "b"]),
    st.integers(-20, 500) | st.sampled_from(["0.1", "2.25"]),
    st.sampled_from(["x", "y", None]),
    st.integers(0, 4),
)
step = st.one_of(
    st.tuples(st.just("events"), st.lists(call, min_size=1, max_size=15), st.booleans()),
    st.tuples(st.just("retract"), st.integers(0, 10**6), st.none()),
    st.tuples(st.just("meter"), st.none(), st.none()),
    st.tuples(st.just("rollup"), st.none(), st.booleans()),
)


def _event(i: int, c: tuple[Any, ...]) -> dict[str, Any]:
    minute, customer, n, m, u = c
    props: dict[str, Any] = {"n": n, "u": f"user{u}"}
    if m is not None:
        props["m"] = m
    t = format_us(START_US + minute * 60_000_000 + (i % 60) * 1_000_000)
    return event(f"e{i}", customer=customer, type_="call", time=t, props=props)


def _play(store: Store, steps: list[Any]) -> list[int]:
    """Apply the history; the seq after each fact (rollup passes take none)."""
    reset(store)
    apply_catalog(store, _catalog(METERS, [V1]), NOW_US)
    clock = FixedClock(to_datetime(NOW_US))
    with store.read() as conn:
        cutoffs = [sequence.current(conn)]
    ids: list[str] = []
    meter_applied = False
    n = 0
    for kind, arg, flag in steps:
        if kind == "events":
            batch = [_event(n + j, c) for j, c in enumerate(arg)]
            n += len(batch)
            ids += [e["event_id"] for e in batch]
            ingest(store, clock, batch, batch_size=4 if flag else 3, backfill=True)  # > 35 days
        elif kind == "retract" and ids:
            retract_event(store, "default", ids[arg % len(ids)], "dispute", NOW_US)
        elif kind == "meter" and not meter_applied:
            meter_applied = True
            apply_catalog(store, _catalog([*METERS, LATE_METER], [V1, V2]), NOW_US)
        elif kind == "rollup":
            rollups.roll_up(store, NOW_US, None if flag else list(LABELS))
            continue
        else:
            continue
        with store.read() as conn:
            cutoffs.append(sequence.current(conn))
    return cutoffs


def _check(store: Store, cutoffs: list[int]) -> None:
    wanted = []
    with store.read() as conn:
        for k in cutoffs:
            for customer in ("a", "b"):
                for label in LABELS:
                    indexed = invoicing.compute_body(conn, customer, label, k)
                    raw = invoicing.compute_body(conn, customer, label, k, raw=True)
                    assert dumps(indexed) == dumps(raw), (k, customer, label)
                    wanted.append((customer, label, k, 2, indexed))
        batched = invoicing.compute_bodies(conn, [w[:4] for w in wanted])
    for w, got in zip(wanted, batched, strict=True):
        assert got is not None and not isinstance(got, Exception), w[:3]
        assert dumps(typed.encode(got)) == dumps(w[4]), w[:3]


SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(steps=st.lists(step, min_size=1, max_size=10))
def test_reads_through_month_rollups_equal_a_raw_fold(store: Store, steps: list[Any]) -> None:
    cutoffs = _play(store, [*steps, ("rollup", None, True)])
    _check(store, cutoffs)


def _history() -> list[Any]:
    spread = [(m, "ab"[m % 2], m % 50, "xy"[m % 3 % 2], m % 5) for m in range(0, SPAN_MINUTES, 53)]
    return [
        ("events", spread[: len(spread) // 2], False),
        ("rollup", None, True),
        ("events", spread[len(spread) // 2 :], False),
        ("retract", 3, None),  # count/sum subtract; min/max/latest/unique_count re-fold
        ("rollup", None, True),
        ("events", [(100, "a", 999, "x", 9), (40000, "b", -5, None, 1)], True),
        ("meter", None, None),
        ("retract", 11, None),
        ("rollup", None, False),
        ("events", [(200, "a", 7, "y", 2)], False),
    ]


def test_a_fixed_history_through_every_rollup_path(store: Store) -> None:
    cutoffs = _play(store, _history())
    _check(store, cutoffs)
    with store.read() as conn:
        passes = conn.execute(
            text("SELECT customer_id, bucket_start, seq, rows FROM usage_rollups ORDER BY seq")
        ).all()
        assert len({int(r[2]) for r in passes}) == 3  # a row per unit written, per pass
        assert all(int(r[3]) > 0 for r in passes)
        k = cutoffs[-1]
        mar = (Grain.DAY, parse_rfc3339("2024-03-01T00:00:00Z"), NOW_US)
        with_months = usage_index.read(conn, "a", ["calls", "tokens"], [mar], k, rollups=True)
        days = usage_index.read(conn, "a", ["calls", "tokens"], [mar], k)
        feb = (Grain.DAY, START_US, parse_rfc3339("2024-02-14T00:00:00Z"))
        units = usage_index.read(conn, "a", ["calls"], [feb], k, rollups=True)
        march = (Grain.WINDOW, mar[1], mar[2])  # the 1-day meter's windows
        daily = usage_index.read(conn, "a", ["daily"], [march], k, rollups=Grain.WINDOW)
    assert {key[2] for key in daily.rows} == {"m"}
    assert {key[2] for key in with_months.rows} == {"m"}  # March whole (April has no rows)
    assert sum(map(len, with_months.rows.values())) < sum(map(len, days.rows.values())) / 4
    starts = sorted((key[2], format_us(key[4])[:10]) for key in units.rows)
    assert starts == [
        ("2", "2024-02-09"),
        ("2", "2024-02-11"),
        ("8", "2024-02-01"),
        ("d", "2024-02-13"),
    ]


def test_a_cut_back_before_the_pass_reads_again(store: Store) -> None:
    cutoffs = _play(store, _history()[:2])
    feb = (Grain.DAY, START_US, parse_rfc3339("2024-03-01T00:00:00Z"))
    with store.read() as conn:
        top = sequence.current(conn)
        got = usage_index.read(conn, "a", ["calls"], [feb], top, rollups=True, whole=True)
        assert got.floor == top
        assert got.as_of(cutoffs[0]).refold and not got.as_of(top).refold


def test_rollup_is_idempotent_and_reports(store: Store) -> None:
    _play(store, _history()[:1])
    first = rollups.roll_up(store, NOW_US)
    assert [p["month"] for p in first["passes"]] == ["2024-02", "2024-03"]
    assert rollups.roll_up(store, NOW_US)["passes"] == []  # nothing changed since
    assert rollups.roll_up(store, NOW_US, ["2024-02"])["passes"] == []  # same seq


def _window_check(store: Store, full: bool) -> Any:
    from meterline.services.reconcile import reconcile

    report = reconcile(store, full=full)
    return next(c for c in report.checks if c.name == "window_aggregates"), report


def test_reconcile_folds_every_pass_again_and_finds_a_tampered_month_row(store: Store) -> None:
    _play(store, _history())
    check, report = _window_check(store, full=True)
    assert report.ok, [c.to_json() for c in report.checks if not c.ok]
    assert "month rollup rows folded again" in check.details
    rows_before = int(check.details.split("; ")[-1].split()[0])
    assert rows_before > 0
    with store.write() as conn:  # behind the system's back: one month row changed
        conn.execute(
            text(
                "UPDATE usage_index SET state = :st "
                "WHERE grain = 'm' AND meter_code = 'calls' AND customer_id = 'a' "
                "AND seq = (SELECT MAX(seq) FROM usage_rollups)"
            ),
            {"st": '{"count":7777,"kind":"count"}'},
        )
    check, report = _window_check(store, full=True)
    assert not check.ok and "month rollup" in check.details and "7777" in check.details


def test_an_incremental_reconcile_checks_the_passes_made_since(store: Store) -> None:
    _play(store, _history()[:1])
    assert _window_check(store, full=True)[1].ok  # the checkpoint
    rollups.roll_up(store, NOW_US)
    with store.write() as conn:
        conn.execute(
            text(
                "UPDATE usage_index SET events = events + 1 "
                "WHERE grain = 'm' AND meter_code = 'tokens' AND customer_id = 'b'"
            )
        )
    check, _ = _window_check(store, full=False)
    assert not check.ok and "rollup at seq" in check.details and "unit m" in check.details


def test_cover_uses_the_largest_units_that_fit() -> None:
    from meterline.metering.bitemporal import cover, month_units

    def d(day: str) -> int:
        return parse_rfc3339(f"2024-{day}T00:00:00Z")

    def shown(lo: str, hi: str, month: str) -> list[tuple[str, str, str]]:
        return [
            (str(g), format_us(a)[5:10], format_us(b)[5:10])
            for g, a, b in cover(d(lo), d(hi), d(month))
        ]

    assert shown("01-01", "02-01", "01-01") == [("m", "01-01", "02-01")]
    assert shown("01-16", "02-01", "01-01") == [
        ("None", "01-16", "01-17"),
        ("8", "01-17", "01-25"),
        ("8", "01-25", "02-01"),  # the month's last block is shorter
    ]
    # 2024 is a leap year: February's last 2-day block is its 29th alone
    assert shown("02-28", "03-01", "02-01") == [("None", "02-28", "02-29"), ("2", "02-29", "03-01")]
    assert shown("02-04", "02-06", "02-01") == [
        ("None", "02-04", "02-05"),
        ("None", "02-05", "02-06"),
    ]
    units = month_units(d("01-01"))
    assert len(units) == 1 + 4 + 16 and units[-1][1:] == (d("01-31"), d("02-01"))


def test_a_pass_folds_only_the_units_that_changed(store: Store) -> None:
    _play(store, _history()[:1])
    first = rollups.roll_up(store, NOW_US)["passes"]
    assert {p["customers"] for p in first} == {2}
    clock = FixedClock(to_datetime(NOW_US))
    late = [_event(10_000, (20 * 1440 + 7, "b", 5, "x", 1))]  # 2024-02-21, customer b
    ingest(store, clock, late, backfill=True)
    second = rollups.roll_up(store, NOW_US)["passes"]
    assert [(p["month"], p["customers"]) for p in second] == [("2024-02", 1)]
    with store.read() as conn:
        seq = second[0]["seq"]
        units = conn.execute(
            text("SELECT customer_id, grain, bucket_start FROM usage_rollups WHERE seq = :s"),
            {"s": seq},
        ).all()
    # the month, the 8-day block of the 17th-24th and the 2-day block of the 21st-22nd
    assert sorted((c, g, format_us(int(b))[:10]) for c, g, b in units) == [
        ("b", "2", "2024-02-21"),
        ("b", "8", "2024-02-17"),
        ("b", "m", "2024-02-01"),
    ]
    _check(store, [seq])
    check, report = _window_check(store, full=True)
    assert report.ok and "month rollup rows folded again" in check.details


def test_cli_index_rollup(store: Store) -> None:
    import json

    from typer.testing import CliRunner

    from meterline.cli.app import app

    _play(store, _history()[:1])
    runner = CliRunner()
    base = ["--db", store.url, "--now", "2024-05-01T00:00:00Z", "index", "rollup"]
    human = runner.invoke(app, base)
    assert human.exit_code == 0, human.output
    assert "2024-02:" in human.stdout and "unit rows" in human.stdout
    again = runner.invoke(app, [*base, "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["passes"] == []
    forced = runner.invoke(app, [*base, "--month", "2024-03", "--json"])
    assert forced.exit_code == 0 and json.loads(forced.stdout)["passes"] == []  # same seq
    for bad in ("2024-13", "march", "2024-03-01"):
        got = runner.invoke(app, [*base, "--month", bad])
        assert got.exit_code == 2 and "INVALID_ARGUMENT" in got.stderr, (bad, got.output)
