"""Exports read back with pyarrow and DuckDB equal the documents, the journal
and the event log (DESIGN §7), on both backends, through the real CLI."""

from __future__ import annotations

import csv
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow.parquet as pq
import pytest
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, calls, catalog, clock, close_january, setup
from tests.support import ingest

from meterline.billing.document import Status
from meterline.domain.errors import MeterlineError
from meterline.domain.timestamps import format_us, parse_rfc3339
from meterline.render.exports import chunks
from meterline.services import invoicing
from meterline.services.corrections import rerate
from meterline.services.exports import COLUMNS, Kind, rows
from meterline.services.retraction import retract_event
from meterline.store import documents, journal
from meterline.store.database import Store

LATER_US = parse_rfc3339("2024-02-03T00:00:00Z")


def world(store: Store) -> None:
    doc = catalog()
    doc["customers"] = [
        {
            "id": cid,
            "name": f"{cid.title()} Corp",
            "currency": "USD",
            "tax_rate": "0.19",
            "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
        }
        for cid in ("acme", "beta")
    ]
    setup(store, doc)
    ingest(store, clock(FEB), [*calls(2_000), *calls(37, prefix="b", customer="beta")])
    close_january(store)
    issued = invoicing.issue(store, "2024-01", FEB_US).issued
    invoicing.set_status(store, issued[0].number, Status.PAID, "wire", FEB_US)
    ingest(store, clock("2024-02-03T00:00:00Z"), calls(500, prefix="late"))
    rerate(store, LATER_US)
    for i in range(300):
        retract_event(store, "default", f"c{i}", "faulty gateway", LATER_US)
    rerate(store, LATER_US)


def export(store: Store, kind: str, fmt: str, path: Path) -> Path:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "meterline",
            "--db",
            store.url,
            "export",
            kind,
            "--period",
            "2024-01",
            "--format",
            fmt,
            "-o",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return path


def dec(v: Any) -> Decimal | None:
    return None if v is None or v == "" else Decimal(str(v))


def read_all(store: Store, kind: str, tmp: Path) -> dict[str, list[dict[str, Any]]]:
    """The same export as pyarrow-from-Parquet, DuckDB-from-Parquet and CSV rows."""
    pq_path = export(store, kind, "parquet", tmp / f"{kind}.parquet")
    csv_path = export(store, kind, "csv", tmp / f"{kind}.csv")
    arrow = pq.read_table(pq_path).to_pylist()
    con = duckdb.connect()
    cursor = con.execute(f"SELECT * FROM read_parquet('{pq_path}')")
    names = [d[0] for d in cursor.description]
    duck = [dict(zip(names, r, strict=True)) for r in cursor.fetchall()]
    with csv_path.open(newline="") as f:
        text_rows = list(csv.DictReader(f))
    assert names == [c.name for c in COLUMNS[Kind(kind)]]
    assert list(text_rows[0]) == names if text_rows else True
    assert len(arrow) == len(duck) == len(text_rows)
    return {"arrow": arrow, "duck": duck, "csv": text_rows}


def test_invoices_and_lines_equal_the_documents(store: Store, tmp_path: Path) -> None:
    world(store)
    with store.read() as conn:
        docs = documents.list_documents(conn)
    assert {d.kind for d in docs} == {"invoice", "debit_note", "credit_note"}
    inv = read_all(store, "invoices", tmp_path)
    expected = [
        {
            "number": d.number,
            "kind": str(d.kind),
            "status": str(d.status),
            "customer_id": d.body.customer_id,
            "total": Decimal(d.to_dict()["total"]),
            "tax": Decimal(d.to_dict()["tax"]),
            "subtotal": Decimal(d.to_dict()["subtotal"]),
            "corrects": d.body.corrects,
            "document_hash": d.document_hash,
        }
        for d in docs
    ]
    for source in ("arrow", "duck"):
        got = [{k: r[k] for k in expected[0]} for r in inv[source]]
        assert got == expected
    assert [r["total"] for r in inv["csv"]] == [
        d.to_dict()["total"] for d in docs
    ]  # the documents' text
    assert [r["issued_at"] for r in inv["csv"]] == [d.issued_at for d in docs]
    assert inv["arrow"][0]["issued_at"].isoformat().startswith(docs[0].issued_at[:19])

    lines = read_all(store, "lines", tmp_path)
    want = [
        (d.number, i, ln["charge"], dec(ln.get("quantity")), dec(ln["amount"]))
        for d in docs
        for i, ln in enumerate(d.to_dict()["lines"], start=1)
    ]
    for source in ("arrow", "duck", "csv"):
        got_lines = [
            (r["number"], int(r["line_no"]), r["charge"], dec(r["quantity"]), dec(r["amount"]))
            for r in lines[source]
        ]
        assert got_lines == want
    total = (
        duckdb.connect()
        .execute(f"SELECT SUM(amount) FROM read_parquet('{tmp_path / 'lines.parquet'}')")
        .fetchone()
    )
    assert total is not None and total[0] == sum((w[4] or Decimal(0) for w in want), Decimal(0))


def test_journal_and_events_equal_the_store(store: Store, tmp_path: Path) -> None:
    world(store)
    with store.read() as conn:
        entries = list(journal.entries(conn))
        events = conn.execute(
            text(
                "SELECT seq, event_id, event_time FROM events WHERE event_time >= :lo AND event_time < :hi ORDER BY seq"
            ),
            {
                "lo": parse_rfc3339("2024-01-01T00:00:00Z"),
                "hi": parse_rfc3339("2024-02-01T00:00:00Z"),
            },
        ).all()
    got = read_all(store, "journal", tmp_path)
    want = [
        (e.seq, e.entry.document, ln.account, ln.debit, ln.credit)
        for e in entries
        for ln in e.entry.lines
    ]
    for source in ("arrow", "duck", "csv"):
        assert [
            (int(r["entry_seq"]), r["document"], r["account"], dec(r["debit"]), dec(r["credit"]))
            for r in got[source]
        ] == want
    debits = sum((w[3] for w in want), Decimal(0))
    credits = sum((w[4] for w in want), Decimal(0))
    assert debits == credits  # the export of a balanced journal balances

    ev = read_all(store, "events", tmp_path)
    assert [(int(r["seq"]), r["event_id"]) for r in ev["csv"]] == [
        (int(s), str(i)) for s, i, _ in events
    ]
    assert [r["event_time"] for r in ev["csv"]] == [format_us(int(t)) for *_, t in events]
    retracted = {r["event_id"] for r in ev["duck"] if r["retracted"]}
    assert retracted == {f"c{i}" for i in range(300)}
    assert ev["csv"][0]["retracted"] in ("true", "false")


def test_exports_stream_in_chunks_and_refuse_bad_arguments(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(10_500), batch_size=5_000)
    pieces = list(chunks("csv", COLUMNS[Kind.EVENTS], rows(store, Kind.EVENTS, "2024-01")))
    assert len(pieces) > 1  # 10,500 events come out in several chunks, not one blob
    with pytest.raises(MeterlineError, match="period must be YYYY-MM"):
        list(rows(store, Kind.LINES, "January"))
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "meterline",
            "--db",
            store.url,
            "export",
            "refunds",
            "--period",
            "2024-01",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stderr.startswith(
        "meterline: INVALID_ARGUMENT: unknown export"
    )
