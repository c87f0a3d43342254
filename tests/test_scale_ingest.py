"""Scale-out ingestion (issue 13): `ingest --workers N` and several ingest processes at once.

Real worker processes (spawn) and real `meterline ingest` processes on a real
store; the three-process test needs PostgreSQL (SQLite has one writer).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests.conftest import NOW, reset
from tests.support import line, stored

from meterline.domain.clock import FixedClock
from meterline.domain.timestamps import parse_rfc3339
from meterline.ingest.parallel import ParallelIngestor
from meterline.ingest.readers import Item, read_file
from meterline.ingest.service import IngestOptions
from meterline.services.catalog import apply_catalog
from meterline.services.usage import query_usage
from meterline.store import sequence
from meterline.store.database import Store
from meterline.wiring import ingestor_for

CATALOG: dict[str, Any] = {
    "meters": [
        {"code": "tokens", "event_type": "api_call", "aggregation": "sum", "property": "tokens"}
    ]
}
FEB_START = parse_rfc3339("2024-02-01T00:00:00Z")
FEB_END = parse_rfc3339("2024-03-01T00:00:00Z")


def _event(event_id: str, customer: str, tokens: int, minute: int) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": customer,
        "event_type": "api_call",
        "event_time": f"2024-02-0{1 + minute % 8}T{minute % 24:02d}:{minute % 60:02d}:00Z",
        "properties": {"tokens": tokens},
    }


def _apply(store: Store) -> None:
    apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))


def _mixed_input() -> list[bytes]:
    """Good events with every kind of reject, spread over several batches."""
    out: list[bytes] = []
    for i in range(400):
        out.append(line(_event(f"e{i}", f"c{i % 5}", i % 17, i)))
        if i % 37 == 0:
            out.append(b"{broken")
        if i % 41 == 0:
            out.append(line({"event_id": f"m{i}", "event_type": "api_call"}))  # no customer
        if i % 43 == 0:
            out.append(line(_event(f"e{i}", f"c{i % 5}", i % 17, i)))  # in-batch/later duplicate
        if i % 47 == 0 and i > 0:
            out.append(line(_event(f"e{i - 1}", "c0", 999, i)))  # conflict
        if i % 53 == 0:
            out.append(line(_event(f"p{i}", "c1", 0, i) | {"properties": {"x": 1}}))  # no tokens
    return out


def _quarantine(store: Store) -> list[tuple[int, str, bytes]]:
    with store.read() as conn:
        rows = conn.execute(text("SELECT position, code, raw FROM quarantine ORDER BY id")).all()
    return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]


def _usage(store: Store, customer: str) -> dict[str, Any]:
    """Windows and total as the index serves them (whatever the index's tables)."""
    with store.read() as conn:
        return query_usage(
            conn,
            customer=customer,
            meter_code="tokens",
            from_us=FEB_START,
            to_us=FEB_END,
            now_us=parse_rfc3339(NOW),
        )


def test_workers_give_the_serial_outcome(store: Store, clock: FixedClock) -> None:
    raw = _mixed_input()
    items = [Item(r, n + 1) for n, r in enumerate(raw)]
    options = IngestOptions(origin="cli", batch_size=64)
    outcomes = []
    for workers in (1, 3):
        reset(store)
        _apply(store)
        report = ParallelIngestor(ingestor_for(store, clock), workers).ingest(items, options)
        usage = [_usage(store, f"c{c}") for c in range(5)]
        outcomes.append(
            (report.to_dict(), report.batches, stored(store), _quarantine(store), usage)
        )
    serial, parallel = outcomes
    assert serial[0]["rejected"] > 10 and serial[0]["duplicates"] > 0  # the input has rejects
    assert {r["code"] for r in serial[0]["rejects"]} >= {
        "INVALID_JSON",
        "MISSING_FIELD",
        "EVENT_ID_CONFLICT",
        "INVALID_PROPERTY",
    }
    assert sum(Decimal(str(u["total"])) for u in serial[4]) > 0
    assert parallel == serial


def test_workers_read_json_arrays_with_decoded_items(
    store: Store, clock: FixedClock, tmp_path: Path
) -> None:
    path = tmp_path / "events.json"
    events = [_event(f"a{i}", "c1", i, i) for i in range(50)] + [{"event_id": "x"}]
    path.write_text(json.dumps(events))
    _apply(store)
    ingestor = ParallelIngestor(ingestor_for(store, clock), 2)
    report = ingestor.ingest(read_file(str(path)), IngestOptions(batch_size=7))
    assert (report.accepted, report.rejected) == (50, 1)
    assert report.rejects[0].index == 50 and report.rejects[0].code == "MISSING_FIELD"


# -- three `meterline ingest` processes writing overlapping files at once ------

CUSTOMERS = 20
SHARED = 1500  # in every file, same content: stored once, duplicates elsewhere
CONFLICTS = 300  # in every file, different content per file: one kept, two quarantined
UNIQUE = 1200  # per file


def _files(tmp_path: Path) -> tuple[list[Path], dict[str, int]]:
    """Three NDJSON files; returns them and the tokens of each non-conflicting key."""
    tokens: dict[str, int] = {}
    shared = [_event(f"s{i}", f"c{i % CUSTOMERS}", i % 13 + 1, i) for i in range(SHARED)]
    for e in shared:
        tokens[e["event_id"]] = e["properties"]["tokens"]
    paths = []
    for f in range(3):
        rows = list(shared)
        rows += [
            _event(f"k{i}", f"c{i % CUSTOMERS}", 100 * (f + 1) + i % 7, i) for i in range(CONFLICTS)
        ]
        unique = [_event(f"u{f}-{i}", f"c{i % CUSTOMERS}", i % 11 + 1, i) for i in range(UNIQUE)]
        for e in unique:
            tokens[e["event_id"]] = e["properties"]["tokens"]
        rows += unique
        # A different order per file so the processes collide on keys all along.
        rows.sort(key=lambda e: hashlib.sha256(f"{f}/{e['event_id']}".encode()).digest())
        path = tmp_path / f"part{f}.ndjson"
        path.write_bytes(b"\n".join(line(e) for e in rows) + b"\n")
        paths.append(path)
    return paths, tokens


def _usage_total(store: Store, customer: str) -> Decimal:
    with store.read() as conn:
        out = query_usage(
            conn,
            customer=customer,
            meter_code="tokens",
            from_us=FEB_START,
            to_us=FEB_END,
            now_us=parse_rfc3339(NOW),
        )
    return Decimal(str(out["total"]))


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_three_ingest_processes_overlapping_files(store: Store, tmp_path: Path) -> None:
    _apply(store)
    with store.read() as conn:
        base = sequence.current(conn)
    paths, tokens = _files(tmp_path)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meterline",
                "--db",
                store.url,
                "--now",
                NOW,
                "ingest",
                str(p),
                "--batch-size",
                "150",
                "--json",
                *(["--workers", "2"] if n == 0 else []),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n, p in enumerate(paths)
    ]
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
        reports.append(json.loads(out))

    keys = SHARED + CONFLICTS + 3 * UNIQUE
    with store.read() as conn:
        rows = conn.execute(
            text("SELECT seq, event_id, customer_id, properties FROM events ORDER BY seq")
        ).all()
        codes = conn.execute(text("SELECT code, COUNT(*) FROM quarantine GROUP BY code")).all()
        last = sequence.current(conn)
    # Every key stored once.
    assert len(rows) == len({r[1] for r in rows}) == keys
    # seq without holes: the events take exactly base+1 .. last.
    assert [int(r[0]) for r in rows] == list(range(base + 1, last + 1))
    # Conflicts quarantined: two of the three versions of each conflicting key.
    assert dict((str(c), int(n)) for c, n in codes) == {"EVENT_ID_CONFLICT": 2 * CONFLICTS}
    assert sum(r["accepted"] for r in reports) == keys
    assert sum(r["duplicates"] for r in reports) == 2 * SHARED
    assert sum(r["rejected"] for r in reports) == 2 * CONFLICTS
    # Usage totals exact: the window index agrees with the stored events.
    expected: dict[str, Decimal] = {}
    for _seq, event_id, customer, props in rows:
        value = json.loads(props)["tokens"]
        if not str(event_id).startswith("k"):
            assert value == tokens[str(event_id)]
        expected[str(customer)] = expected.get(str(customer), Decimal(0)) + Decimal(value)
    for customer, total in expected.items():
        assert _usage_total(store, customer) == total


def test_cli_workers_report_equals_serial_report(tmp_path: Path) -> None:
    """`meterline ingest --workers 3` prints what `--workers 1` prints (SQLite files)."""
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"\n".join(_mixed_input()) + b"\n")
    outputs = []
    for workers in ("1", "3"):
        db = f"sqlite:///{tmp_path / f'w{workers}.db'}"
        base = [sys.executable, "-m", "meterline", "--db", db, "--now", NOW]
        assert subprocess.run([*base, "init"], capture_output=True).returncode == 0
        proc = subprocess.run(
            [*base, "ingest", str(path), "--batch-size", "50", "--workers", workers, "--json"],
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        outputs.append(json.loads(proc.stdout))
    assert outputs[0]["rejected"] > 10 and outputs[0]["rejects"][0]["line"] > 0
    assert outputs[1] == outputs[0]
