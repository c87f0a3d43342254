"""Reconciliation (DESIGN §9): a clean workload ties out; every break made
behind the system's back is found by the check that owns it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, TIERS, calls, catalog, clock, close_january
from tests.support import event, ingest
from typer.testing import CliRunner

from meterline.billing.document import Status
from meterline.cli.app import app
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.ledger import balances, journal
from meterline.services.reconcile import ReconcileReport, reconcile
from meterline.services.retraction import retract_event
from meterline.store.database import Store

LATER = "2024-02-03T00:00:00Z"
LATER_US = parse_rfc3339(LATER)
VERSION = {
    "version": "v1",
    "effective_from": "2024-01-01T00:00:00Z",
    "charges": [
        {"code": "api", "meter": "api_calls", "model": "graduated", "tiers": TIERS},
        {"code": "platform", "model": "flat", "amount": "49.00"},
    ],
}
SUB = [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}]
CUSTOMERS = [
    {
        "id": "acme",
        "name": "Acme",
        "currency": "USD",
        "tax_rate": "0.20",
        "subscriptions": SUB,
        "credits": [{"id": "g1", "amount": "10.00", "granted_at": "2023-12-01T00:00:00Z"}],
    },
    {"id": "beta", "name": "Beta", "currency": "USD", "subscriptions": SUB},
    {"id": "gamma", "name": "Gamma", "currency": "USD", "subscriptions": SUB},
    # Subscribed from February only: its January usage is unbilled (a warning).
    {
        "id": "delta",
        "name": "Delta",
        "currency": "USD",
        "subscriptions": [{"price_book": "standard", "start": "2024-02-01T00:00:00Z"}],
    },
]


def workload(store: Store) -> None:
    """Invoices, a debit note, a credit note, a payment and a void."""
    apply_catalog(
        store, catalog(VERSION, customers=CUSTOMERS), parse_rfc3339("2024-01-01T00:00:00Z")
    )
    ingest(
        store,
        clock(FEB),
        calls(1_200)
        + calls(300, prefix="b", customer="beta")
        + calls(20, prefix="g", customer="gamma")
        + calls(5, prefix="d", customer="delta")
        + [event("odd", customer="acme", type_="unmetered_thing", time="2024-01-05T00:00:00Z")],
        batch_size=500,
    )
    close_january(store)
    issued = invoicing.issue(store, "2024-01", FEB_US).issued
    assert [d.number for d in issued] == ["INV-000001", "INV-000002", "INV-000003"]
    ingest(store, clock(LATER), calls(100, prefix="late"))  # acme: late usage
    for i in range(40):
        retract_event(store, "default", f"b{i}", "duplicated by the gateway", LATER_US)
    notes = rerate(store, LATER_US).issued
    assert sorted(d.number for d in notes) == ["CN-000001", "DN-000001"]
    invoicing.set_status(store, "INV-000001", Status.PAID, "wire 123", LATER_US)
    invoicing.set_status(store, "INV-000003", Status.VOID, "issued in error", LATER_US)


def failing(report: ReconcileReport) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


def test_a_clean_workload_ties_out_and_reports_unbilled_usage(store: Store) -> None:
    workload(store)
    report = reconcile(store)
    assert report.ok, report.to_json()
    out = report.to_json()
    assert [c["name"] for c in out["checks"]] == [
        "ingestion_counts",
        "window_aggregates",
        "documents_reproduce",
        "document_arithmetic",
        "ledger_balanced",
        "ledger_postings",
        "ledger_receivable",
        "ledger_revenue",
        "hash_chain",
        "void_corrections",
        "merkle_log",
    ]
    warnings = {w["name"]: w for w in out["warnings"]}
    assert set(warnings) == {"unknown_customers", "unmetered_event_types", "no_subscription"}
    assert "nobody (1 event)" in warnings["unknown_customers"]["details"]
    assert "unmetered_thing (1 event)" in warnings["unmetered_event_types"]["details"]
    assert "delta 2024-01 (5 events)" in warnings["no_subscription"]["details"]

    # Balances are projections of the journal and match the documents.
    by_account = {b["account"]: b for b in balances(store)}
    # acme paid INV-1; CN-1 (beta) and DN-1 (acme) and INV-2 (beta) are open; INV-3 void.
    assert by_account["receivable:gamma"]["balance"] == "0.00"
    assert by_account["customer_credit:acme"]["debit"] == "10.00"
    assert all(e["balanced"] for e in journal(store))
    kinds = [(e["document"], e["kind"]) for e in journal(store)]
    assert ("INV-000001", "payment") in kinds and ("INV-000003", "void") in kinds
    assert journal(store, limit=2) == journal(store)[-2:]
    acme = {b["account"] for b in balances(store, "acme")}
    assert "receivable:beta" not in acme and "receivable:acme" in acme


def test_a_late_mark_not_yet_rerated_is_a_warning_not_a_failure(store: Store) -> None:
    workload(store)
    ingest(store, clock("2024-02-05T00:00:00Z"), calls(10, prefix="later", customer="beta"))
    report = reconcile(store)
    assert report.ok
    [pending] = [w for w in report.warnings if w.name == "pending_rerate"]
    assert "INV-000002 beta 2024-01" in pending.details and "debit_note" in pending.details
    rerate(store, parse_rfc3339("2024-02-05T00:00:00Z"))
    assert not [w for w in reconcile(store).warnings if w.name == "pending_rerate"]


def _set_body_total(conn: Any, number: str, total: str) -> None:
    body = json.loads(
        conn.execute(
            text("SELECT body FROM documents WHERE number = :n"), {"n": number}
        ).scalar_one()
    )
    body["total"] = total
    conn.execute(
        text("UPDATE documents SET body = :b, total = :t WHERE number = :n"),
        {"b": json.dumps(body, sort_keys=True, separators=(",", ":")), "t": total, "n": number},
    )


BREAKS: dict[str, tuple[Callable[[Any], None], str, str]] = {
    "changed invoice total (column)": (
        lambda c: c.execute(
            text("UPDATE documents SET total = '1.00' WHERE number = 'INV-000002'")
        ),
        "document_arithmetic",
        "INV-000002: column total is '1.00'",
    ),
    "changed invoice total (body)": (
        lambda c: _set_body_total(c, "INV-000002", "1.00"),
        "documents_reproduce",
        "INV-000002: stored body does not match its content hash",
    ),
    "deleted event": (
        lambda c: c.execute(text("DELETE FROM events WHERE event_id = 'c7'")),
        "ingestion_counts",
        "accepted but",
    ),
    "altered window aggregate": (
        lambda c: c.execute(
            text(
                "UPDATE usage_index SET state = :st, events = 999 "
                "WHERE customer_id = 'beta' AND meter_code = 'api_calls' AND grain = 'w' "
                "AND bucket_start = (SELECT MIN(bucket_start) FROM usage_index "
                "WHERE customer_id = 'beta' AND meter_code = 'api_calls' AND grain = 'w')"
            ),
            {"st": '{"count":999,"kind":"count"}'},
        ),
        "window_aggregates",
        "window api_calls/beta/",
    ),
    "removed journal line": (
        lambda c: c.execute(
            text(
                "DELETE FROM journal_lines WHERE line_no = 1 AND entry_seq = "
                "(SELECT seq FROM journal_entries WHERE document = 'DN-000001')"
            )
        ),
        "ledger_balanced",
        "(DN-000001): debits",
    ),
    "changed hash": (
        lambda c: c.execute(
            text("UPDATE documents SET document_hash = :h WHERE number = 'INV-000002'"),
            {"h": "f" * 64},
        ),
        "hash_chain",
        "INV-000002: document_hash does not match",
    ),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_each_break_is_found_by_its_check(store: Store, name: str) -> None:
    workload(store)
    assert reconcile(store).ok
    tamper, check, detail = BREAKS[name]
    with store.write() as conn:
        tamper(conn)
    report = reconcile(store, full=True)
    assert not report.ok
    assert check in failing(report), report.to_json()
    assert detail in report.check(check).details, report.check(check).details
    # Nothing unrelated fails.
    related = {
        # A document is a fact of the log: altering its row breaks its leaf (check 8).
        "changed invoice total (column)": {"document_arithmetic", "merkle_log"},
        "changed invoice total (body)": {
            "documents_reproduce",
            "document_arithmetic",
            "ledger_postings",
            "ledger_receivable",
            "merkle_log",
        },
        "deleted event": {
            "ingestion_counts",
            "window_aggregates",
            "documents_reproduce",
            "merkle_log",
        },
        "altered window aggregate": {"window_aggregates"},
        "removed journal line": {"ledger_balanced", "ledger_postings", "ledger_receivable"},
        "changed hash": {"hash_chain", "merkle_log"},
    }[name]
    assert failing(report) <= related, failing(report)


def test_the_cli_exits_1_on_a_discrepancy(store: Store) -> None:
    workload(store)
    runner = CliRunner()
    ok = runner.invoke(app, ["--db", store.url, "reconcile", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["ok"] is True
    human = runner.invoke(app, ["--db", store.url, "reconcile"])
    assert human.exit_code == 0 and "the books tie out" in human.stdout
    with store.write() as conn:
        conn.execute(
            text("UPDATE documents SET document_hash = :h WHERE number = 'CN-000001'"),
            {"h": "0" * 64},
        )
    bad = runner.invoke(app, ["--db", store.url, "reconcile", "--full", "--json"])
    assert bad.exit_code == 1
    out = json.loads(bad.stdout)
    assert out["ok"] is False
    assert [c["name"] for c in out["checks"] if not c["ok"]] == ["hash_chain", "merkle_log"]
    # A document before the checkpoint is not read again by an incremental run (its
    # chain tip is carried): the sweep over the facts before the checkpoint finds it.
    bad = runner.invoke(app, ["--db", store.url, "reconcile", "--json"])
    assert bad.exit_code == 1
    out = json.loads(bad.stdout)
    assert out["mode"] == "incremental"
    assert [c["name"] for c in out["checks"] if not c["ok"]] == ["merkle_log"]
    for args in (
        ["ledger", "balances", "--json"],
        ["ledger", "journal", "--limit", "3"],
        ["ledger", "balances", "--customer", "acme"],
    ):
        r = runner.invoke(app, ["--db", store.url, *args])
        assert r.exit_code == 0, r.output
    assert (
        runner.invoke(app, ["--db", store.url, "ledger", "journal", "--limit", "0"]).exit_code == 2
    )


def test_large_series_are_recomputed_in_chunks(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chunked path (used above CHUNK_EVENTS events per series) finds the same things."""
    from meterline.services import reconcile as module

    monkeypatch.setattr(module, "CHUNK_EVENTS", 10)
    workload(store)
    stages: list[str] = []
    report = reconcile(store, lambda stage, done, total: stages.append(stage))
    assert report.ok, report.to_json()
    assert {"ingestion", "windows", "documents", "ledger", "warnings"} <= set(stages)
    with store.write() as conn:
        BREAKS["altered window aggregate"][0](conn)
        conn.execute(
            text(
                "INSERT INTO usage_index (customer_id, meter_code, grain, bucket_start, "
                "dimensions, seq, first_seq, kind, state, events) VALUES "
                "('acme', 'api_calls', 'w', 0, '[]', 1, 1, 'add', :st, 1)"
            ),
            {"st": '{"count":1,"kind":"count"}'},
        )
    report = reconcile(store, full=True)
    assert failing(report) == {"window_aggregates"}
    assert report.check("window_aggregates").count == 2


def test_upgrading_a_store_with_documents_backfills_the_journal(store: Store) -> None:
    from alembic import command

    from meterline.store.database import _alembic_config

    workload(store)
    before = journal(store)
    cfg = _alembic_config()
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
    store.upgrade()
    assert journal(store) == before
    assert reconcile(store).ok


def test_events_a_later_meter_cannot_read_are_reported(store: Store) -> None:
    """Before the tokens meter exists nothing checks `tokens`; once it does, ingestion
    quarantines such events, and reconciliation names the ones already stored."""
    apply_catalog(
        store, catalog(VERSION, customers=CUSTOMERS), parse_rfc3339("2024-01-01T00:00:00Z")
    )
    ingest(
        store,
        clock(FEB),
        [
            event("t1", type_="llm_call", props={"tokens": 10}),
            event("t2", type_="llm_call", props={"tokens": "lots"}),
            event("t3", type_="llm_call", props={}),
        ],
    )
    meter = {"code": "tokens", "event_type": "llm_call", "aggregation": "sum", "property": "tokens"}
    apply_catalog(store, {"meters": [meter]}, FEB_US)
    report = reconcile(store)
    assert report.ok
    [unreadable] = [w for w in report.warnings if w.name == "unreadable_events"]
    assert unreadable.count == 2
    assert "(default, t2) for tokens" in unreadable.details
    assert "(default, t3) for tokens" in unreadable.details
