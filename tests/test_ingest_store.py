"""The event store on both backends: dedup, conflicts, quarantine, seq, retraction."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text
from tests.support import event, ingest, stored

from meterline.domain.clock import FixedClock
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.ingest.readers import read_file
from meterline.ingest.service import IngestOptions
from meterline.store import sequence
from meterline.store.database import Store
from meterline.store.event_log import iter_events, retract
from meterline.wiring import ingestor_for

NOW_US = 1707523200000000  # 2024-02-10T00:00:00Z


def test_accepts_and_assigns_contiguous_seq(store: Store, clock: FixedClock) -> None:
    report = ingest(store, clock, [event(f"e{i}") for i in range(5)])
    assert (report.accepted, report.duplicates, report.rejected) == (5, 0, 0)
    assert [r[0] for r in stored(store)] == [1, 2, 3, 4, 5]
    with store.read() as conn:
        assert sequence.current(conn) == 5


def test_resending_is_a_duplicate_and_stores_nothing(store: Store, clock: FixedClock) -> None:
    events = [event(f"e{i}", props={"n": i}) for i in range(5)]
    ingest(store, clock, events)
    before = stored(store)
    again = ingest(store, clock, [*events, events[0]])
    assert (again.accepted, again.duplicates, again.rejected) == (0, 6, 0)
    assert stored(store) == before


def test_same_key_different_content_is_a_conflict(store: Store, clock: FixedClock) -> None:
    ingest(store, clock, [event("e1", props={"tokens": 10})])
    report = ingest(store, clock, [event("e1", props={"tokens": 11})])
    assert report.rejected == 1
    assert report.rejects[0].code == "EVENT_ID_CONFLICT"
    with store.read() as conn:
        props = conn.execute(text("SELECT properties FROM events")).scalar_one()
    assert props == '{"tokens":10}'  # the original stays


def test_key_is_source_and_event_id(store: Store, clock: FixedClock) -> None:
    report = ingest(store, clock, [event("e1", source="a"), event("e1", source="b")])
    assert report.accepted == 2


def test_conflict_within_one_batch_keeps_the_first(store: Store, clock: FixedClock) -> None:
    report = ingest(
        store,
        clock,
        [event("e1", props={"v": 1}), event("e1", props={"v": 2}), event("e1", props={"v": 1})],
    )
    assert (report.accepted, report.duplicates, report.rejected) == (1, 1, 1)
    assert report.rejects[0].index == 1


def test_bad_lines_are_quarantined_with_raw_input(store: Store, clock: FixedClock) -> None:
    bad = '{"event_id": "x", "customer_id": "acme"'
    report = ingest(store, clock, [event("e1"), bad, event("e2", time="2024-02-01T10:00:00")])
    assert (report.accepted, report.rejected) == (1, 2)
    assert [(r.index, r.code) for r in report.rejects] == [
        (1, "INVALID_JSON"),
        (2, "INVALID_EVENT_TIME"),
    ]
    with store.read() as conn:
        rows = conn.execute(
            text("SELECT position, code, raw FROM quarantine ORDER BY position")
        ).all()
    assert [(r[0], r[1]) for r in rows] == [(1, "INVALID_JSON"), (2, "INVALID_EVENT_TIME")]
    assert bytes(rows[0][2]) == bad.encode()


def test_batch_counts_tie_out(store: Store, clock: FixedClock) -> None:
    events = [event(f"e{i}") for i in range(30)] + ["nope"] + [event("e0")]
    ingest(store, clock, events, batch_size=7)
    with store.read() as conn:
        a, d, r = conn.execute(
            text("SELECT SUM(accepted), SUM(duplicates), SUM(rejected) FROM ingest_batches")
        ).one()
        n_events = conn.execute(text("SELECT COUNT(*) FROM events")).scalar_one()
        n_quarantine = conn.execute(text("SELECT COUNT(*) FROM quarantine")).scalar_one()
    assert (a, d, r) == (30, 1, 1)
    assert n_events == a and n_quarantine == r


def test_backfill_is_recorded_on_the_events(store: Store, clock: FixedClock) -> None:
    old = event("old", time="2023-11-01T00:00:00Z")
    rejected = ingest(store, clock, [old])
    assert rejected.rejects[0].code == "EVENT_TOO_OLD"
    accepted = ingest(store, clock, [old], backfill=True)
    assert accepted.accepted == 1
    with store.read() as conn:
        assert conn.execute(text("SELECT backfill FROM events")).scalar_one() in (True, 1)


def test_retraction_hides_the_event_from_its_seq_on(store: Store, clock: FixedClock) -> None:
    ingest(store, clock, [event("e1"), event("e2")])
    with store.write() as conn:
        r = retract(conn, "default", "e1", "bad telemetry", NOW_US)
    assert r.seq == 3 and not r.already
    with store.read() as conn:
        assert [s.event.event_id for s in iter_events(conn)] == ["e2"]
        assert [s.event.event_id for s in iter_events(conn, as_of=2)] == ["e1", "e2"]
    with store.write() as conn:
        again = retract(conn, "default", "e1", "twice", NOW_US)
    assert again.already and again.seq == 3 and again.reason == "bad telemetry"


def test_retracting_an_unknown_event_fails_clearly(store: Store) -> None:
    with pytest.raises(MeterlineError) as info, store.write() as conn:
        retract(conn, "default", "missing", "why", NOW_US)
    assert info.value.code == ErrorCode.EVENT_NOT_FOUND


def test_seq_is_shared_by_every_kind_of_fact(store: Store, clock: FixedClock) -> None:
    ingest(store, clock, [event("e1")])
    with store.write() as conn:
        retract(conn, "default", "e1", "x", NOW_US)
    ingest(store, clock, [event("e2")])
    assert [r[0] for r in stored(store)] == [1, 3]


def test_as_known_at_k(store: Store, clock: FixedClock) -> None:
    ingest(store, clock, [event("e1")])
    ingest(store, clock, [event("e2")])
    with store.read() as conn:
        assert [s.event.event_id for s in iter_events(conn, as_of=1)] == ["e1"]


def test_events_across_months_and_years(store: Store, clock: FixedClock) -> None:
    times = ["2023-12-31T23:59:59.999999Z", "2024-01-01T00:00:00Z", "2024-02-09T23:59:59Z"]
    report = ingest(
        store, clock, [event(f"e{i}", time=t) for i, t in enumerate(times)], backfill=True
    )
    assert report.accepted == 3


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv", "csv-props"])
def test_input_formats(store: Store, clock: FixedClock, tmp_path, fmt: str) -> None:  # type: ignore[no-untyped-def]
    evs = [event("e1", props={"tokens": 5}), event("e2", props={"tokens": 7})]
    if fmt == "ndjson":
        path = tmp_path / "in.ndjson"
        path.write_text("\n".join(json.dumps(e) for e in evs) + "\n\n")
    elif fmt == "json":
        path = tmp_path / "in.json"
        path.write_text(json.dumps(evs))
    elif fmt == "csv":
        path = tmp_path / "in.csv"
        path.write_text(
            "event_id,customer_id,event_type,event_time,properties\n"
            'e1,acme,api_call,2024-02-01T10:00:00Z,"{""tokens"": 5}"\n'
            'e2,acme,api_call,2024-02-01T10:00:00Z,"{""tokens"": 7}"\n'
        )
    else:
        path = tmp_path / "in.csv"
        path.write_text(
            "event_id,customer_id,event_type,event_time,properties.tokens\n"
            "e1,acme,api_call,2024-02-01T10:00:00Z,5\n"
            "e2,acme,api_call,2024-02-01T10:00:00Z,\n"
        )
    report = ingestor_for(store, clock).ingest(read_file(str(path)), IngestOptions(origin="test"))
    assert (report.accepted, report.rejected) == (2, 0)
    with store.read() as conn:
        props = [s.event.properties for s in iter_events(conn)]
    if fmt == "csv-props":
        assert props == ['{"tokens":"5"}', "{}"]  # CSV cells are strings; empty = absent
    else:
        assert props == ['{"tokens":5}', '{"tokens":7}']


def test_csv_with_bad_properties_json_is_rejected(
    store: Store, clock: FixedClock, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.csv"
    path.write_text(
        "event_id,customer_id,event_type,event_time,properties\ne1,acme,t,2024-02-01T10:00:00Z,{oops\n"
    )
    report = ingestor_for(store, clock).ingest(read_file(str(path)), IngestOptions())
    assert report.rejects[0].code == "INVALID_FIELD"
