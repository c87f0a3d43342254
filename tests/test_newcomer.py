"""Issue 12, a newcomer's first hour: every bug it lists, by name.

Real processes (`python -m meterline`), real stores (the `store` fixture runs
on SQLite and PostgreSQL), real sockets on loopback.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pypdf import PdfReader
from tests.billing_support import FEB_US, calls, catalog, clock, close_january, setup
from tests.support import event, ingest

from meterline import __version__
from meterline.billing.body import encode
from meterline.billing.document import Status
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.services import invoicing
from meterline.services.corrections import rerate
from meterline.services.reconcile import reconcile
from meterline.store.database import Store

NOW = "2024-02-10T00:00:00Z"
ROOT = Path(__file__).resolve().parent.parent


def run(
    *args: str, db: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    pre = ["--db", db] if db else []
    return subprocess.run(
        [sys.executable, "-m", "meterline", *pre, "--now", NOW, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def one_coded_line(proc: subprocess.CompletedProcess[str], code: str) -> str:
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"meterline: {code}: "), err
    assert "╭" not in err and "Traceback" not in err and "internal error" not in err
    return err


def world(store: Store) -> None:
    setup(
        store,
        catalog(
            customers=[
                {
                    "id": "acme",
                    "name": "Acme Corp",
                    "currency": "USD",
                    "tax_rate": "0.19",
                    "billing_address": ["1 Main St", "Springfield"],
                    "payment_terms": "net 15",
                    "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
                }
            ]
        )
        | {"seller": {"name": "Seller Ltd", "address": ["2 High St"], "tax_id": "GB123"}},
    )
    ingest(store, clock("2024-02-01T12:00:00Z"), calls(3))
    close_january(store)


# --- CLI -------------------------------------------------------------------------


def test_version_prints_the_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"meterline {__version__}"


def test_usage_errors_are_one_coded_line_without_boxes(tmp_path: Path) -> None:
    proc = run("invoice", "issue", db=f"sqlite:///{tmp_path}/x.db")
    assert proc.returncode == 2
    assert "--period" in one_coded_line(proc, "INVALID_ARGUMENT")
    assert one_coded_line(run("no-such-command"), "INVALID_ARGUMENT")


def test_help_has_examples_and_no_type_placeholders() -> None:
    for cmd in (["ingest", "-h"], ["invoice", "issue", "-h"], ["status", "-h"]):
        out = run(*cmd).stdout
        assert "<bool>" not in out and "<str>" not in out and "╭" not in out, out
    assert "Examples:" in run("ingest", "-h").stdout


def test_read_only_commands_never_create_an_empty_database_file(tmp_path: Path) -> None:
    db = tmp_path / "never.db"
    for cmd in (["status"], ["invoice", "list"], ["catalog", "show"], ["reconcile"]):
        proc = run(*cmd, db=f"sqlite:///{db}")
        assert proc.returncode == 2
        one_coded_line(proc, "STORE_NOT_INITIALISED")
    assert not db.exists()


def _silent_server() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback socket that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return srv, held


@pytest.mark.parametrize("query", ["?connect_timeout=2", ""])
def test_postgres_that_never_answers_fails_with_a_coded_timeout(query: str) -> None:
    srv, held = _silent_server()
    try:
        port = srv.getsockname()[1]
        t0 = time.monotonic()
        proc = run("status", db=f"postgresql://postgres@127.0.0.1:{port}/x{query}")
        elapsed = time.monotonic() - t0
    finally:
        srv.close()
        for c in held:
            c.close()
    assert proc.returncode == 2
    err = one_coded_line(proc, "STORE_UNAVAILABLE")
    assert "connect_timeout" in err
    assert elapsed < (30 if query else 60)


def test_invoice_render_errors_are_coded_not_internal(store: Store, tmp_path: Path) -> None:
    world(store)
    invoicing.issue(store, "2024-01", FEB_US)
    proc = run(
        "invoice",
        "render",
        "INV-000001",
        "--format",
        "pdf",
        "-o",
        "/missing/dir/x.pdf",
        db=store.url,
    )
    assert proc.returncode == 2
    one_coded_line(proc, "OUTPUT_UNWRITABLE")
    proc = run("invoice", "render", "INV-000001", "--format", "xx", db=store.url)
    assert proc.returncode == 2
    one_coded_line(proc, "INVALID_ARGUMENT")
    # WeasyPrint missing: a package of that name that cannot be imported shadows it.
    shadow = tmp_path / "shadow" / "weasyprint"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('No module named weasyprint')\n")
    import os

    env = dict(os.environ, PYTHONPATH=f"{shadow.parent}{os.pathsep}{ROOT / 'src'}")
    proc = run(
        "invoice",
        "render",
        "INV-000001",
        "--format",
        "pdf",
        "-o",
        str(tmp_path / "x.pdf"),
        db=store.url,
        env=env,
    )
    assert proc.returncode == 2
    one_coded_line(proc, "DEPENDENCY_MISSING")


def test_ingest_strict_exits_2_on_any_reject_and_default_exits_0(
    store: Store, tmp_path: Path
) -> None:
    setup(store)
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"sorce": 1\n')
    plain = run("ingest", str(bad), db=store.url)
    assert plain.returncode == 0
    assert "not valid JSON" in plain.stdout and "JSON is malformed" not in plain.stdout
    strict = run("ingest", str(bad), "--strict", db=store.url)
    assert strict.returncode == 2
    one_coded_line(strict, "EVENTS_REJECTED")
    good = tmp_path / "good.ndjson"
    good.write_text(json.dumps(event("g1")) + "\n")
    ok = run("ingest", str(good), "--strict", db=store.url)
    assert ok.returncode == 0 and "quarantine" not in ok.stdout


def test_parser_internals_do_not_leak() -> None:
    from meterline.domain.events import validate_bytes

    huge = b'{"event_id":"e","customer_id":"c","event_type":"t","event_time":"2024-01-01T00:00:00Z","properties":{"n":1e999999}}'
    for raw in (b"{broken", b'{"a":', huge):
        r = validate_bytes(raw, now_us=FEB_US)
        assert "JSON is malformed" not in r.message and "$[" not in r.message, r  # type: ignore[union-attr]
        assert "malformed JSON" not in r.message  # type: ignore[union-attr]


def test_plain_output_when_piped_plurals_and_no_value_none(store: Store) -> None:
    world(store)
    invoicing.issue(store, "2024-01", FEB_US)
    reconciled = run("reconcile", db=store.url)
    assert "┃" not in reconciled.stdout and "\x1b[" not in reconciled.stdout
    explained = run("explain", "INV-000001", "--line", "1", "--events", db=store.url)
    assert explained.returncode == 0, explained.stderr
    assert "value=None" not in explained.stdout
    assert re.search(r"\b1 events\b|\b1 windows\b", explained.stdout) is None


def test_status_shows_watermarks_and_when_periods_close(store: Store) -> None:
    setup(store)
    ingest(store, clock("2024-02-01T12:00:00Z"), calls(2))
    proc = run("status", "--json", db=store.url)
    out = json.loads(proc.stdout)
    assert out["watermark"] == "2024-01-10T01:01:00Z"
    jan = next(p for p in out["open_periods"] if p["period"] == "2024-01")
    assert jan == {
        "customer_id": "acme",
        "period": "2024-01",
        "start": "2024-01-01T00:00:00Z",
        "end": "2024-02-01T00:00:00Z",
        "closes_at": "2024-02-01T03:00:00Z",
        "closed": False,
    }
    human = run("status", db=store.url).stdout
    assert "watermark" in human and "closes" in human and "short" in human


def test_catalog_show_round_trips_and_validate_applies_nothing(
    store: Store, tmp_path: Path
) -> None:
    world(store)
    shown = run("catalog", "show", "--format", "json", db=store.url)
    doc = json.loads(shown.stdout)
    assert doc["seller"]["name"] == "Seller Ltd"
    path = tmp_path / "catalog.json"
    path.write_text(shown.stdout)
    again = run("catalog", "apply", str(path), "--json", db=store.url)
    assert json.loads(again.stdout)["added"] == []
    doc["customers"][0]["name"] = "Acme Renamed"
    path.write_text(json.dumps(doc))
    checked = run("catalog", "validate", str(path), db=store.url)
    assert checked.returncode == 0 and "would add customer acme" in checked.stdout
    assert "Acme Corp" in run("catalog", "show", db=store.url).stdout
    doc["meters"][0]["aggregation"] = "sum"
    path.write_text(json.dumps(doc))
    one_coded_line(run("catalog", "validate", str(path), db=store.url), "INVALID_CATALOG")


def test_quarantine_list_and_replay(store: Store, tmp_path: Path) -> None:
    setup(store)
    old = tmp_path / "old.ndjson"
    old.write_text(json.dumps(event("old1", time="2023-01-05T00:00:00Z")) + "\n")
    run("ingest", str(old), db=store.url)
    listed = json.loads(run("quarantine", "list", "--json", db=store.url).stdout)
    (item,) = listed["items"]
    assert item["code"] == "EVENT_TOO_OLD" and item["stored_now"] is False
    still = run("quarantine", "replay", str(item["id"]), db=store.url)
    assert still.returncode == 2 and "still rejected" in still.stdout
    fixed = run("quarantine", "replay", "--all", "--backfill", db=store.url)
    assert fixed.returncode == 0 and "1 stored" in fixed.stdout
    listed = json.loads(run("quarantine", "list", "--json", db=store.url).stdout)
    assert listed["items"][0]["stored_now"] is True


def test_void_invoice_voids_its_open_notes_and_reconcile_agrees(store: Store) -> None:
    world(store)
    invoicing.issue(store, "2024-01", FEB_US)
    ingest(store, clock("2024-02-02T00:00:00Z"), calls(2, prefix="late"))
    (note,) = rerate(store, FEB_US + 10**9).issued
    invoicing.set_status(store, "INV-000001", Status.VOID, "wrong customer", FEB_US + 2 * 10**9)
    assert invoicing.show(store, note.number).status == Status.VOID
    report = reconcile(store)
    assert report.ok, report.to_json()
    assert report.check("void_corrections").ok


def test_void_is_refused_while_a_note_is_paid(store: Store) -> None:
    world(store)
    invoicing.issue(store, "2024-01", FEB_US)
    ingest(store, clock("2024-02-02T00:00:00Z"), calls(2, prefix="late"))
    (note,) = rerate(store, FEB_US + 10**9).issued
    invoicing.set_status(store, note.number, Status.PAID, "paid", FEB_US + 2 * 10**9)
    with pytest.raises(MeterlineError) as err:
        invoicing.set_status(store, "INV-000001", Status.VOID, "x", FEB_US + 3 * 10**9)
    assert err.value.code == ErrorCode.INVALID_STATUS_CHANGE
    assert invoicing.show(store, "INV-000001").status == Status.ISSUED


# --- invoices -----------------------------------------------------------------------


def test_invoice_finance_details_text_and_pdf(store: Store, tmp_path: Path) -> None:
    world(store)
    invoicing.issue(store, "2024-01", FEB_US)
    doc = invoicing.show(store, "INV-000001").to_dict()
    fin = doc["finance"]
    assert fin["issue_date"] == "2024-02-01" and fin["due_date"] == "2024-02-16"
    assert fin["payment_terms"] == "net 15" and fin["tax_percent"] == "19%"
    assert fin["seller"]["tax_id"] == "GB123" and fin["bill_to"]["address"] == [
        "1 Main St",
        "Springfield",
    ]
    assert "finance" not in encode(invoicing.show(store, "INV-000001").body)  # not hashed
    text = run("invoice", "show", "INV-000001", db=store.url).stdout
    assert "tax 19%" in text and "due: 2024-02-16 (net 15)" in text
    assert "period:   2024-01: 2024-01-01 to 2024-01-31 (UTC)" in text
    assert "1 – 1,000 at $0.02" in text
    pdf_path = tmp_path / "inv.pdf"
    proc = run(
        "invoice", "render", "INV-000001", "--format", "pdf", "-o", str(pdf_path), db=store.url
    )
    assert proc.returncode == 0, proc.stderr
    page1 = PdfReader(pdf_path).pages[0].extract_text()
    assert "Due date" in page1 and "February 16, 2024" in page1
    assert "Tax 19%" in page1 and "1 – 1,000 at $0.02" in page1
    assert "Seller Ltd" in page1 and "Springfield" in page1
    assert re.search(r"\d{20,}", page1.replace(",", "")) is None


def test_demo_subscriptions_start_at_local_midnight() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from meterline.demo.catalog import catalog as demo_catalog
    from meterline.demo.workload import Workload

    doc = demo_catalog(Workload(customers=20, events=1000))
    assert doc["seller"]["name"] and doc["seller"]["address"]
    zones = set()
    for c in doc["customers"]:
        assert c["billing_address"]
        start = datetime.fromisoformat(c["subscriptions"][0]["start"].replace("Z", "+00:00"))
        local = start.astimezone(ZoneInfo(c["timezone"]))
        if c["timezone"] in ("Europe/Berlin", "Asia/Tokyo"):
            zones.add(c["timezone"])
            assert (local.day, local.hour, local.minute) == (1, 0, 0), c["id"]
    assert zones == {"Europe/Berlin", "Asia/Tokyo"}


JPY_CATALOG = {
    "meters": [
        {"code": "api_calls", "event_type": "api_call", "aggregation": "count"},
        {"code": "tokens", "event_type": "llm_call", "aggregation": "sum", "property": "tokens"},
    ],
    "price_books": [
        {
            "code": "japan",
            "currency": "JPY",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2023-12-01T00:00:00Z",
                    "charges": [
                        {
                            "code": "api",
                            "meter": "api_calls",
                            "model": "per_unit",
                            "unit_price": "2",
                        },
                        {
                            "code": "tok",
                            "meter": "tokens",
                            "model": "package",
                            "package_size": 1000,
                            "package_price": "60",
                        },
                        {"code": "platform", "model": "flat", "amount": "5000"},
                    ],
                }
            ],
        }
    ],
    "customers": [
        {
            "id": "kk",
            "name": "Kabushiki Kaisha Example",
            "currency": "JPY",
            "timezone": "Asia/Tokyo",
            "tax_rate": "0.10",
            "payment_terms": "net 45",
            "billing_address": ["1-1-1 Marunouchi", "Tokyo"],
            # 10:00 local on 3 January: the flat fee is prorated to an inexact decimal
            "subscriptions": [{"price_book": "japan", "start": "2024-01-03T01:00:00Z"}],
        }
    ],
    "seller": {"name": "Seller KK", "address": ["Tokyo"]},
}


def test_jpy_invoice_and_credit_note_pdfs_by_text(store: Store, tmp_path: Path) -> None:
    from meterline.domain.timestamps import parse_rfc3339
    from meterline.services.catalog import apply_catalog
    from meterline.services.retraction import retract_event

    apply_catalog(store, JPY_CATALOG, parse_rfc3339("2024-01-01T00:00:00Z"))
    events = [
        event(f"k{i}", customer="kk", time=f"2024-01-{10 + i:02d}T03:00:00Z") for i in range(5)
    ]
    events.append(
        event(
            "t1",
            customer="kk",
            type_="llm_call",
            time="2024-01-12T03:00:00Z",
            props={"tokens": 12345},
        )
    )
    ingest(store, clock("2024-02-01T12:00:00Z"), events)
    ingest(
        store,
        clock("2024-02-01T12:00:00Z"),
        [event("hb", customer="nobody", type_="ping", time="2024-02-01T11:00:00Z")],
    )
    invoicing.issue(store, "2024-01", FEB_US)
    retract_event(store, "default", "k1", "test traffic", FEB_US + 10**9)
    (note,) = rerate(store, FEB_US + 2 * 10**9).issued
    assert note.number == "CN-000001"
    for number, must in (
        (
            "INV-000001",
            ["Due date", "March 17, 2024", "Tax 10%", "¥60 per 1,000", "¥2 each", "Net 45"],
        ),
        ("CN-000001", ["Tax 10%", "Tax: The tax on this note", "¥2 each"]),
    ):
        path = tmp_path / f"{number}.pdf"
        proc = run("invoice", "render", number, "--format", "pdf", "-o", str(path), db=store.url)
        assert proc.returncode == 0, proc.stderr
        page1 = PdfReader(path).pages[0].extract_text()
        for text in must:
            assert text in page1, (number, text, page1)
        assert re.search(r"\d{20,}", page1.replace(",", "").replace(".", "")) is None, page1
    assert "Due date" not in PdfReader(tmp_path / "CN-000001.pdf").pages[0].extract_text()
