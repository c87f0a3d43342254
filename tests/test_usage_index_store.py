"""The usage index on the store: row kinds per cause, format-1 documents still
verifying, and migration 0005 building the index of an existing store."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, calls, catalog, clock, close_january, setup
from tests.support import event, ingest

from meterline.billing.body import decode
from meterline.billing.document import Kind, body_hash, format_of
from meterline.billing.periods import month
from meterline.domain.timestamps import parse_rfc3339
from meterline.metering.bitemporal import Grain
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.retraction import retract_event
from meterline.services.verification import verify
from meterline.store import documents, sequence, usage_index
from meterline.store.database import Store, _alembic_config, open_store
from meterline.store.usage_index import folded_windows

LATER_US = parse_rfc3339("2024-02-03T00:00:00Z")


def _rows(store: Store, meter: str) -> list[tuple[str, str, int]]:
    with store.read() as conn:
        return [
            (str(r[0]), str(r[1]), int(r[2]))
            for r in conn.execute(
                text(
                    "SELECT kind, grain, events FROM usage_index WHERE meter_code = :m "
                    "ORDER BY seq, grain"
                ),
                {"m": meter},
            )
        ]


def test_each_cause_appends_its_rows(store: Store) -> None:
    doc = catalog()
    doc["meters"].append(
        {"code": "peak", "event_type": "api_call", "aggregation": "max", "property": "n"}
    )
    setup(store, doc)
    ingest(
        store,
        clock(FEB),
        [event("a", props={"n": 5}), event("b", props={"n": 9})],
    )
    assert _rows(store, "api_calls") == [("add", "d", 2), ("add", "w", 2)]
    retract_event(store, "default", "b", "dispute", FEB_US)
    # count subtracts; max cannot, so its window and day are re-folded as `set` rows
    assert _rows(store, "api_calls")[2:] == [("sub", "d", 1), ("sub", "w", 1)]
    assert _rows(store, "peak")[2:] == [("set", "d", 1), ("set", "w", 1)]
    with store.read() as conn:
        windows = folded_windows(conn)
    assert windows[("peak", "acme", "[]", parse_rfc3339("2024-02-01T10:00:00Z"))] == (
        '{"kind":"max","max":"5"}',
        1,
    )
    # a meter applied after its events: `set` rows over the events, at its seq
    doc["meters"].append(
        {"code": "sum_n", "event_type": "api_call", "aggregation": "sum", "property": "n"}
    )
    apply_catalog(store, doc, FEB_US)
    assert _rows(store, "sum_n") == [("set", "d", 1), ("set", "w", 1)]


def _issue_format_1(store: Store, customer: str, label: str) -> str:
    """An invoice as issued before the usage index existed (legacy body, no format)."""
    with store.write() as conn:
        k = sequence.lock(conn)
        body = invoicing.compute_body(conn, customer, label, k, fmt=1)
        assert "format" not in body
        assert "events_digest" in body["lines"][0]["usage"]
        typed_body = decode(body)
        issued = documents.append(
            conn, Kind.INVOICE, typed_body, body_hash(body), month(label, "UTC"), FEB_US, False
        )
    return issued.number


def test_format_1_documents_keep_verifying_next_to_format_2(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(40))
    close_january(store)
    number = _issue_format_1(store, "acme", "2024-01")
    assert verify(store).ok
    ingest(store, clock("2024-02-02T12:00:00Z"), calls(5, prefix="late"))
    notes = rerate(store, LATER_US).issued
    assert [format_of(n.body) for n in notes] == [2]
    assert notes[0].body.corrects == number
    assert "events_digest" not in notes[0].to_dict()["lines"][0]["usage"]
    report = verify(store)
    assert report.ok, report.to_dict()
    # a format-1 document altered is still caught
    with store.write() as conn:
        conn.execute(
            text("UPDATE documents SET body = REPLACE(body, '\"40\"', '\"41\"') WHERE number = :n"),
            {"n": number},
        )
    assert not verify(store, number).ok


def test_migration_0005_builds_the_index_of_an_existing_store(store: Store) -> None:
    from alembic import command

    doc = catalog()
    doc["meters"].append(
        {"code": "peak", "event_type": "api_call", "aggregation": "max", "property": "n"}
    )
    setup(store, doc)
    evs = [
        event(f"e{i}", time=f"2024-01-1{i % 3}T0{i % 9}:00:00Z", props={"n": i}) for i in range(30)
    ]
    ingest(store, clock(FEB), evs, batch_size=7)
    retract_event(store, "default", "e29", "dispute", FEB_US)
    retract_event(store, "default", "e3", "dispute", FEB_US)
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    with store.read() as conn:
        before = folded_windows(conn)
        before_at = {k: folded_windows(conn, k) for k in range(1, sequence.current(conn) + 1)}
    cfg = _alembic_config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
        names = set(store.engine.dialect.get_table_names(conn))
        assert "windows" in names and "usage_index" not in names
    store.upgrade()
    with store.read() as conn:
        assert folded_windows(conn) == before
        # rebuilt as ingestion wrote it, so it answers every past K the same way
        for k, want in before_at.items():
            assert folded_windows(conn, k) == want, k
    assert verify(store).ok


def test_a_bucket_fed_by_many_batches_gets_a_checkpoint(store: Store) -> None:
    setup(store)
    for i in range(12):  # twelve batches into one window and one day
        ingest(store, clock(FEB), [event(f"c{i}", time=f"2024-01-10T10:{i:02d}:00Z")])
    close_january(store)
    with store.read() as conn:
        k_before = sequence.current(conn)
    invoicing.issue(store, "2024-01", FEB_US)
    # the month reads the day rollup only, so that is what gets the checkpoint
    assert [r for r in _rows(store, "api_calls") if r[0] == "cpt"] == [("cpt", "d", 12)]
    ingest(store, clock(FEB), [event("late", time="2024-01-10T10:30:00Z")])
    with store.read() as conn:
        k = sequence.current(conn)
        for at in (k_before, k):
            indexed = invoicing.compute_body(conn, "acme", "2024-01", at)
            assert indexed == invoicing.compute_body(conn, "acme", "2024-01", at, raw=True)
        assert indexed["lines"][0]["quantity"] == "13"
        got = usage_index.read(conn, "acme", ["api_calls"], [(Grain.DAY, 0, 2**62)], None)
        assert [len(rows) for rows in got.rows.values()] == [2]  # the checkpoint and the late add
    w = query_window(store)
    assert (w["value"], w["version"]) == ("13", 13)  # a checkpoint is not a new version


def query_window(store: Store) -> dict[str, object]:
    from meterline.services.usage import query_usage

    with store.read() as conn:
        out = query_usage(
            conn,
            customer="acme",
            meter_code="api_calls",
            from_us=parse_rfc3339("2024-01-10T10:00:00Z"),
            to_us=parse_rfc3339("2024-01-10T11:00:00Z"),
            now_us=FEB_US,
        )
    return dict(out["windows"][0])


def test_migration_0021_clusters_the_index_on_sqlite_with_the_same_rows(store: Store) -> None:
    """The index rebuilt as a WITHOUT ROWID table on SQLite keeps every row (and a
    downgrade gives the rowid table back); on PostgreSQL the migration changes nothing."""
    from alembic import command

    setup(store)
    evs = [event(f"e{i}", time=f"2024-01-1{i % 3}T0{i % 9}:00:00Z") for i in range(30)]
    ingest(store, clock(FEB), evs, batch_size=7)
    retract_event(store, "default", "e3", "dispute", FEB_US)

    def rows() -> list[tuple[object, ...]]:
        with store.read() as conn:
            return [
                tuple(r)
                for r in conn.execute(
                    text("SELECT * FROM usage_index ORDER BY 1, 2, 3, 4, 5, 6, 7")
                )
            ]

    def clustered() -> bool:
        with store.read() as conn:
            sql = conn.execute(
                text("SELECT sql FROM sqlite_master WHERE name = 'usage_index'")
            ).scalar_one()
        return "WITHOUT ROWID" in str(sql)

    before = rows()
    assert len(before) > 10
    if store.is_sqlite:
        assert clustered()  # a new store is clustered from the start
    cfg = _alembic_config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0020")
    assert rows() == before
    if store.is_sqlite:
        assert not clustered()
    store.upgrade()
    assert rows() == before
    if store.is_sqlite:
        assert clustered()
        with store.read() as conn:
            names = {
                r[0]
                for r in conn.execute(
                    text(
                        "SELECT name FROM sqlite_master WHERE tbl_name = 'usage_index' AND type = 'index'"
                    )
                )
            }
        assert {"ix_usage_index_seq", "ix_usage_index_states"} <= names
    with store.read() as conn:
        folded = folded_windows(conn)
    assert folded  # still read as before
    assert verify(store).ok


def test_index_reads_probe_the_key_down_to_each_bucket_range(tmp_path: Path) -> None:
    """Several ranges in one read (a price change's cut days, the windows of a
    segment edge) must each probe (customer, meter, grain, bucket_start): with the
    customer and meter conditions outside the OR, SQLite probed (customer, meter)
    only and read every bucket the customer ever had (SQLite; PostgreSQL plans
    OR-ed ranges with a bitmap of index scans)."""
    store = open_store(f"sqlite:///{tmp_path / 'plan.db'}")
    store.upgrade()
    ranges = [(Grain.DAY, 0, 10), (Grain.WINDOW, 20, 30), (Grain.DAY, 40, 50)]
    sql, params = usage_index._select(False, ["a", "b"], ["api_calls", "tokens"], ranges, 9)
    with store.read() as conn:
        plan = [str(r[3]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql), params)]
    store.dispose()
    searches = [p for p in plan if p.startswith("SEARCH")]
    assert len(searches) == len(ranges), plan
    assert all("grain=? AND bucket_start>? AND bucket_start<?" in p for p in searches), plan
