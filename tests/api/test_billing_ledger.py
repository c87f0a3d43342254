"""Reconciliation and ledger endpoints against the real server."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from tests.api.billing_world import admin, issue_january, january_world
from tests.api.server import NOW, Server, meterline

from meterline.store.database import Store


def test_reconcile_and_ledger_after_issue_and_payment(server: Server, store: Store) -> None:
    january_world(server)
    doc = issue_january(server)
    with admin(server) as http:
        report = http.get("/v1/reconcile", params={"full": "true"})
        assert report.status_code == 200, report.text
        body = report.json()
        assert body["ok"] is True, body
        assert {c["name"] for c in body["checks"]} >= {"ingestion_counts", "window_aggregates"}
        proc = meterline("--db", store.url, "--now", NOW, "reconcile", "--full", "--json")
        assert proc.returncode == 0, proc.stderr
        cli = json.loads(proc.stdout)
        # Each clean run records a checkpoint chained to the previous one.
        assert cli["checkpoint"].pop("previous") == body["checkpoint"].pop("recorded")
        cli["checkpoint"].pop("recorded")
        body["checkpoint"].pop("previous")
        assert cli == body
        incremental = http.get("/v1/reconcile").json()
        assert incremental["ok"] is True and incremental["mode"] == "incremental"

        balances = http.get("/v1/ledger/balances").json()
        by_account = {b["account"]: b for b in balances}
        assert by_account["receivable:acme"]["balance"] == doc["total"]
        assert http.get("/v1/ledger/balances", params={"customer": "globex"}).json() == []

        entries: list[dict[str, Any]] = http.get("/v1/ledger/journal").json()
        [entry] = entries
        assert entry["document"] == "INV-000001" and entry["balanced"] is True
        debit = sum(Decimal(ln["debit"]) for ln in entry["lines"])
        credit = sum(Decimal(ln["credit"]) for ln in entry["lines"])
        assert debit == credit == Decimal(doc["total"])

        assert http.post("/v1/invoices/INV-000001/pay").status_code == 200
        newest = http.get("/v1/ledger/journal", params={"limit": 1}).json()
        assert len(newest) == 1 and newest[0]["seq"] > entry["seq"]
        receivable = {b["account"]: b["balance"] for b in http.get("/v1/ledger/balances").json()}[
            "receivable:acme"
        ]
        assert Decimal(receivable) == 0
        assert http.get("/v1/reconcile").json()["ok"] is True

        for params in ({"limit": 0}, {"limit": "x"}):
            bad = http.get("/v1/ledger/journal", params=params)
            assert bad.status_code == 400 and bad.json()["error"]["code"] == "INVALID_ARGUMENT"
