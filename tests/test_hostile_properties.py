"""Issue 11, property-based: whatever a producer sends through the CLI (a real
`meterline ingest` subprocess) or Kafka (a real Tansu broker), each bad event
is rejected on its own with a stable code, never exit 70; every valid event
beside it is stored; the store then reconciles clean. Both backends.

Example counts are modest (each example is a subprocess or a consumer group),
so each suite runs in about a minute per backend.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from tests.hostile import CATALOG, good_event, hostile_line
from tests.test_kafka import (  # noqa: F401  (brokers: the module's broker fixture)
    Running,
    _committed,
    _produce,
    _wait_for,
    _worker,
    brokers,
)

from meterline.domain.clock import Clock
from meterline.domain.timestamps import parse_rfc3339
from meterline.services.catalog import apply_catalog
from meterline.store.database import Store

NOW = "2024-02-10T00:00:00Z"
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def meterline(db: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "meterline", "--db", db, "--now", NOW, *args],
        capture_output=True,
        timeout=120,
    )


def stored_ids(store: Store) -> set[str]:
    with store.read() as conn:
        return {str(r) for r in conn.execute(text("SELECT event_id FROM events")).scalars()}


def assert_reconciles(store: Store) -> None:
    proc = meterline(store.url, "reconcile", "--json")
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert json.loads(proc.stdout)["ok"] is True


def _with_good(lines: list[bytes], goods: list[dict[str, Any]]) -> list[bytes]:
    """Interleave: good, hostile, good, hostile, ..., good."""
    out: list[bytes] = []
    for i, g in enumerate(goods):
        out.append(json.dumps(g).encode())
        if i < len(lines):
            out.append(lines[i])
    return out + lines[len(goods) :]


def test_cli_ingest_any_input_rejects_per_event_and_stores_the_rest(
    store: Store, tmp_path: Path
) -> None:
    apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))
    expected: set[str] = set()

    @SETTINGS
    @given(lines=st.lists(hostile_line(), min_size=1, max_size=6), backfill=st.booleans())
    def run(lines: list[bytes], backfill: bool) -> None:
        goods = [good_event() for _ in range(len(lines) + 1)]
        path = tmp_path / f"in-{uuid.uuid4().hex}.ndjson"
        path.write_bytes(b"\n".join(_with_good(lines, goods)) + b"\n")
        args = ["ingest", str(path), "--json"] + (["--backfill"] if backfill else [])
        proc = meterline(store.url, *args)
        err = proc.stderr.decode(errors="replace")
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        report = json.loads(proc.stdout)
        assert report["accepted"] >= len(goods)
        assert all(r["code"] and "\n" not in r["message"] for r in report["rejects"])
        expected.update(g["event_id"] for g in goods)

    run()
    assert expected <= stored_ids(store)
    with store.read() as conn:
        quarantined = conn.execute(text("SELECT COUNT(*) FROM quarantine")).scalar_one()
    assert quarantined > 0
    assert_reconciles(store)


def test_cli_json_array_file_isolates_each_element(store: Store, tmp_path: Path) -> None:
    """A JSON array file: a bad element (1e400, 1000 deep, NUL) is one reject, not the file."""
    goods = [good_event() for _ in range(3)]
    bad = [
        b'{"event_id":"x","properties":{"n":1e400}}',
        b'{"event_id":"y","properties":' + b'{"n":' * 1000 + b"1" + b"}" * 1000 + b"}",
        json.dumps(good_event() | {"event_id": "n\u0000ul"}).encode(),
    ]
    body = b"[" + b",".join(_with_good(bad, goods)) + b"]"
    path = tmp_path / "events.json"
    path.write_bytes(body)
    proc = meterline(store.url, "ingest", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert (report["accepted"], report["rejected"]) == (3, 3)
    assert [r["code"] for r in report["rejects"]] == [
        "INVALID_FIELD",
        "NESTING_TOO_DEEP",
        "INVALID_TEXT",
    ]


def test_cli_csv_with_invalid_utf8_and_oversized_cells_goes_on(
    store: Store, tmp_path: Path
) -> None:
    rows = [
        b"event_id,customer_id,event_type,event_time,properties.tokens",
        b"c1,acme,llm_call,2024-02-01T10:00:00Z,5",
        b"c2,ac\xffme,llm_call,2024-02-01T10:00:00Z,5",
        b"c3,acme,llm_call,2024-02-01T10:00:00Z," + b"9" * 200_000,
        b"c4,acme,llm_call,2024-02-01T10:00:00Z,6,extra",
        b"c5,acme,llm_call,2024-02-01T10:00:00Z,7",
    ]
    path = tmp_path / "events.csv"
    path.write_bytes(b"\n".join(rows) + b"\n")
    proc = meterline(store.url, "ingest", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert {"c1", "c5"} <= stored_ids(store)
    assert "INVALID_TEXT" in {r["code"] for r in report["rejects"]}
    assert report["accepted"] + report["rejected"] == 5


def test_invoice_run_with_a_customer_that_cannot_be_invoiced_exits_2(
    store: Store, tmp_path: Path
) -> None:
    from tests.test_hostile_inputs import _two_customers

    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(_two_customers()))
    assert meterline(store.url, "catalog", "apply", str(catalog)).returncode == 0
    with store.write() as conn:
        conn.execute(
            text(
                "UPDATE price_versions SET definition = replace(definition, '0.02', '1e400') "
                "WHERE book_code = 'premium'"
            )
        )
    proc = meterline(store.url, "invoice", "issue", "--period", "2024-01", "--force")
    assert proc.returncode == 2
    err = proc.stderr.decode().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("meterline: INVALID_CATALOG: beta")
    assert "2 issued" in proc.stdout.decode() and "1 failed" in proc.stdout.decode()


@pytest.mark.xdist_group("kafka")
def test_kafka_any_message_is_dead_lettered_or_stored_never_blocks(
    store: Store, clock: Clock, request: pytest.FixtureRequest
) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    url: str = request.getfixturevalue("brokers")

    apply_catalog(store, CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))
    expected: set[str] = set()

    @settings(SETTINGS, max_examples=3)
    @given(lines=st.lists(hostile_line(), min_size=3, max_size=12))
    def run(lines: list[bytes]) -> None:
        topic = f"hostile-{uuid.uuid4().hex[:10]}"
        admin = AdminClient({"bootstrap.servers": url})
        for future in admin.create_topics([NewTopic(topic, num_partitions=3)]).values():
            future.result(15)
        goods = [good_event() for _ in range(len(lines) + 1)]
        values = _with_good(lines, goods)
        ends = _produce(url, topic, [(b"k%d" % (i % 3), v) for i, v in enumerate(values)])
        group = f"g-{uuid.uuid4().hex[:6]}"
        running = Running(_worker(store, clock, url, topic, group, batch_size=5))
        try:
            _wait_for(lambda: _committed(url, topic, group) == ends, what="offsets committed")
        finally:
            running.stop()
        assert running.error is None
        assert running.worker.stats.store_failures == 0
        expected.update(g["event_id"] for g in goods)
        assert expected <= stored_ids(store)

    run()
    assert_reconciles(store)


def test_cli_instants_at_the_edges_of_the_calendar_are_bad_input(
    store: Store, tmp_path: Path
) -> None:
    path = tmp_path / "one.ndjson"
    path.write_text(json.dumps(good_event()) + "\n")
    for edge in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "meterline",
                "--db",
                store.url,
                "--now",
                edge,
                "ingest",
                str(path),
            ],
            capture_output=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert b"INVALID_ARGUMENT" in proc.stderr and b"Traceback" not in proc.stderr
        usage = meterline(
            store.url, "usage", "--customer", "acme", "--meter", "m", "--from", edge, "--to", edge
        )
        assert usage.returncode == 2, usage.stderr
        assert len(usage.stderr.splitlines()) == 1
