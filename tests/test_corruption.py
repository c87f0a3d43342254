"""The auditor reports, never crashes (issue 11): direct SQL edits of every table
that holds facts, on both stores, make `reconcile` and `verify` exit 1 with the
check that owns the table failing and the row named; never exit 70.

And the tamper tests of the Merkle log (DESIGN §2, §9): altering, deleting or
inserting an event behind the system's back fails the tree check, incremental
or full; `--full` also fails the index check."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, calls, catalog, clock, close_january
from tests.support import event, ingest
from typer.testing import CliRunner

from meterline.billing.document import Status
from meterline.cli.app import app
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.reconcile import reconcile
from meterline.services.retraction import retract_event
from meterline.store.database import Store

LATER = "2024-02-03T00:00:00Z"
LATER_US = parse_rfc3339(LATER)
ONE = {"event_id": "c5"}


def world(store: Store) -> None:
    """One of every fact: catalog, events (one unmetered), an invoice, a late event
    and its correction, a retraction, a manual re-rating mark, a payment."""
    apply_catalog(store, catalog(), parse_rfc3339("2024-01-01T00:00:00Z"))
    ingest(
        store,
        clock(FEB),
        [*calls(60), event("odd", type_="unmetered", time="2024-01-05T00:00:00Z")],
    )
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    ingest(store, clock(LATER), calls(3, prefix="late"))
    retract_event(store, "default", "c9", "sent twice", LATER_US)
    rerate(store, LATER_US, "acme", "2024-01", reason="customer dispute")
    invoicing.set_status(store, "INV-000001", Status.PAID, "wire", LATER_US)


def _seq(conn: Any, table: str, where: str = "") -> int:
    return int(conn.execute(text(f"SELECT MIN(seq) FROM {table} {where}")).scalar_one())


def _exec(sql: str, **params: Any) -> Callable[[Any], str]:
    """An edit, and the row it names ('<table> seq N')."""

    def run(conn: Any) -> str:
        table = sql.split()[1] if sql.startswith("UPDATE") else sql.split()[2]
        where = sql.split(" WHERE ", 1)[1] if " WHERE " in sql else ""
        seq = _seq(conn, table, f"WHERE {where}" if where else "")
        conn.execute(text(sql), params)
        return f"{table} seq {seq}"

    return run


# name -> (edit returning the row text the report must name, check that must fail)
EDITS: dict[str, tuple[Callable[[Any], str], str]] = {
    "events: properties not JSON": (
        _exec("UPDATE events SET properties = :p WHERE event_id = 'c5'", p="{not json"),
        "merkle_log",
    ),
    "events: unmetered event altered": (
        _exec("UPDATE events SET properties = :p WHERE event_id = 'odd'", p='{"n":1}'),
        "merkle_log",
    ),
    "events: customer changed": (
        _exec("UPDATE events SET customer_id = 'other' WHERE event_id = 'c7'"),
        "merkle_log",
    ),
    "retractions: reason": (
        _exec("UPDATE retractions SET reason = 'x' WHERE event_id = 'c9'"),
        "merkle_log",
    ),
    "meters: definition not JSON": (
        _exec("UPDATE meters SET definition = '{' WHERE code = 'api_calls'"),
        "merkle_log",
    ),
    "price_books: currency": (
        _exec("UPDATE price_books SET currency = 'EUR' WHERE code = 'standard'"),
        "merkle_log",
    ),
    "price_versions: definition": (
        _exec("UPDATE price_versions SET definition = '[]' WHERE label = 'v1'"),
        "merkle_log",
    ),
    "customers: definition": (
        _exec("UPDATE customers SET definition = '{}' WHERE customer_id = 'acme'"),
        "merkle_log",
    ),
    "documents: body not JSON": (
        _exec("UPDATE documents SET body = 'garbage' WHERE number = 'INV-000001'"),
        "documents_reproduce",
    ),
    "documents: total not a number": (
        _exec("UPDATE documents SET total = 'lots' WHERE number = 'INV-000001'"),
        "merkle_log",
    ),
    "document_status: paid becomes void": (
        _exec("UPDATE document_status SET status = 'void' WHERE number = 'INV-000001'"),
        "merkle_log",
    ),
    "rerate_marks: manual mark reason": (
        _exec("UPDATE rerate_marks SET reason = 'x' WHERE kind = 'manual'"),
        "merkle_log",
    ),
}


def _cli(store: Store, *args: str) -> tuple[int, dict[str, Any]]:
    r = CliRunner().invoke(app, ["--db", store.url, *args, "--json"])
    assert r.exit_code in (0, 1), (r.exit_code, r.output, r.stderr)
    return r.exit_code, json.loads(r.stdout)


def _failing(out: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["details"] for c in out["checks"] if not c["ok"]}


@pytest.mark.parametrize("name", list(EDITS))
def test_every_fact_table_edit_is_named_and_nothing_crashes(store: Store, name: str) -> None:
    world(store)
    assert reconcile(store).ok
    edit, check = EDITS[name]
    with store.write() as conn:
        row = edit(conn)
    for args in (["reconcile", "--full"], ["reconcile"]):
        code, out = _cli(store, *args)
        failing = _failing(out)
        # An incremental run does not read a document from before its checkpoint again
        # (DESIGN §9): the fact row is found by the sweep (this store fits in one slice).
        incremental_doc = args == ["reconcile"] and check == "documents_reproduce"
        assert code == 1 and (check in failing or incremental_doc), (args, out)
        # The tree check names the fact row in both modes (facts are leaves).
        assert "merkle_log" in failing, out
        assert row in failing["merkle_log"] or row.split(" seq ")[0] == "documents", failing
        assert any(row in details for details in failing.values()), (row, failing)
    code, out = _cli(store, "verify")
    assert code in (0, 1)


def test_values_of_the_wrong_type(store: Store) -> None:
    """SQLite stores whatever it is given (text in an integer column); on PostgreSQL
    the closest is properties that are JSON but not an object. The auditor names the row."""
    world(store)
    with store.write() as conn:
        if store.is_sqlite:
            conn.execute(text("UPDATE events SET event_time = 'soon' WHERE event_id = 'c3'"))
        else:
            conn.execute(text("UPDATE events SET properties = '[1, 2]' WHERE event_id = 'c3'"))
        seq = _seq(conn, "events", "WHERE event_id = 'c3'")
    code, out = _cli(store, "reconcile", "--full")
    failing = _failing(out)
    assert code == 1 and f"events seq {seq}" in failing["merkle_log"], failing
    code, out = _cli(store, "verify")
    assert code in (0, 1)


def test_structural_tables(store: Store) -> None:
    """Nodes, checkpoints, batches and quarantine: each named by its check."""
    world(store)
    assert reconcile(store).ok
    with store.write() as conn:
        conn.execute(
            text("UPDATE merkle_nodes SET hash = :h WHERE level = 0 AND idx = 3"),
            {"h": b"\x00" * 32},
        )
        conn.execute(text("DELETE FROM merkle_nodes WHERE level = 1 AND idx = 5"))
        conn.execute(text("UPDATE reconcile_checkpoints SET report_hash = 'x'"))
        conn.execute(text("UPDATE ingest_batches SET accepted = accepted + 1 WHERE id = 1"))
    code, out = _cli(store, "reconcile")
    failing = _failing(out)
    assert code == 1 and out["mode"] == "incremental"
    assert "checkpoint 1: its hash does not match" in failing["merkle_log"]
    assert "seq 4 (leaf 3)" in failing["merkle_log"]  # found by the patrol sweep
    code, out = _cli(store, "reconcile", "--full")
    failing = _failing(out)
    assert "customers seq 4 (leaf 3)" in failing["merkle_log"]
    assert "node (level 1, index 5) is missing" in failing["merkle_log"]
    assert "batch 1:" in failing["ingestion_counts"]


def test_a_backfill_at_the_edge_of_the_calendar_never_stops_the_auditor(store: Store) -> None:
    """Issue 11: "0001-01-01T00:00:00+01:00" (before year 1 in UTC) is refused at the
    edge now (INVALID_EVENT_TIME); a row that holds such an instant anyway (written
    behind the system's back, SQLite; PostgreSQL's month partitions cannot hold it)
    is a failed check that names it, never a crash."""
    world(store)
    report = ingest(
        store, clock(LATER), [event("ancient", time="0001-01-01T00:00:00+01:00")], backfill=True
    )
    assert report.accepted == 0 and [r.code for r in report.rejects] == ["INVALID_EVENT_TIME"]
    if store.is_sqlite:
        with store.write() as conn:
            conn.execute(
                text("UPDATE events SET event_time = :t WHERE event_id = 'c4'"),
                {"t": -62135600400 * 1_000_000},  # 0001-01-01T00:00:00+01:00
            )
    for args in (["reconcile", "--full"], ["reconcile"], ["verify"]):
        code, out = _cli(store, *args)
        assert code in (0, 1), out
    if store.is_sqlite:
        code, out = _cli(store, "reconcile", "--full")
        failing = {c["name"] for c in out["checks"] if not c["ok"]}
        assert code == 1 and "merkle_log" in failing, out


# Tamper tests: the tree check finds what was done behind the system's back.


def _tamper_world(store: Store) -> None:
    world(store)
    assert reconcile(store).ok  # checkpoint: the next run is incremental


def test_tamper_alter_event(store: Store) -> None:
    _tamper_world(store)
    with store.write() as conn:
        conn.execute(
            text("UPDATE events SET event_time = event_time + 7200000000 WHERE event_id = 'c4'")
        )
    incremental = reconcile(store)
    assert incremental.mode == "incremental"
    assert {c.name for c in incremental.checks if not c.ok} == {"merkle_log"}
    full = reconcile(store, full=True)
    assert {"merkle_log", "window_aggregates"} <= {c.name for c in full.checks if not c.ok}


def test_tamper_delete_event(store: Store) -> None:
    _tamper_world(store)
    with store.write() as conn:
        conn.execute(text("DELETE FROM events WHERE event_id = 'c4'"))
    incremental = reconcile(store)
    assert "merkle_log" in {c.name for c in incremental.checks if not c.ok}
    # Found by the sweep over the facts before the checkpoint (one slice holds them all).
    assert "no fact holds it" in incremental.check("merkle_log").details
    full = reconcile(store, full=True)
    assert {"merkle_log", "window_aggregates"} <= {c.name for c in full.checks if not c.ok}
    assert "no fact holds it" in full.check("merkle_log").details


def test_tamper_insert_event(store: Store) -> None:
    _tamper_world(store)
    with store.write() as conn:
        row = conn.execute(
            text(
                "SELECT seq, source, event_id, customer_id, event_type, event_time, properties, "
                "content_hash, received_at, batch_id, backfill FROM events WHERE event_id = 'c4'"
            )
        ).one()
        values = dict(row._mapping)
        # Squeezed in between two known facts, and once more above the counter.
        for seq, eid in ((values["seq"], "forged1"), (10_000, "forged2")):
            if store.is_postgres:
                conn.execute(
                    text("INSERT INTO event_keys VALUES (:s, :e, :q, :h)"),
                    {"s": "default", "e": eid, "q": seq, "h": values["content_hash"]},
                )
            conn.execute(
                text(
                    "INSERT INTO events (seq, source, event_id, customer_id, event_type, "
                    "event_time, properties, content_hash, received_at, batch_id, backfill) "
                    "VALUES (:seq, :source, :e, :customer_id, :event_type, :event_time, "
                    ":properties, :content_hash, :received_at, :batch_id, :backfill)"
                ),
                {
                    **values,
                    "seq": seq if store.is_postgres else seq + 100_000,
                    "e": eid,
                    "event_time": values["event_time"] + 60_000_000,
                },
            )
    incremental = reconcile(store)
    assert "merkle_log" in {c.name for c in incremental.checks if not c.ok}, incremental.to_json()
    full = reconcile(store, full=True)
    failing = {c.name for c in full.checks if not c.ok}
    assert {"merkle_log", "window_aggregates"} <= failing, full.to_json()
