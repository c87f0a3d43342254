"""The audit trail: one row per state-changing command, in its transaction."""

from __future__ import annotations

import json

import pytest
from tests.billing_support import FEB, FEB_US, calls, clock, close_january, setup
from tests.support import ingest
from typer.testing import CliRunner

from meterline.billing.document import Status
from meterline.cli.app import app
from meterline.domain.errors import MeterlineError
from meterline.domain.timestamps import format_us, parse_rfc3339
from meterline.services import invoicing
from meterline.services.audit import acting_as, entries
from meterline.services.corrections import rerate
from meterline.services.retraction import retract_event
from meterline.store.database import Store

LATER_US = parse_rfc3339("2024-02-03T00:00:00Z")


def test_every_state_change_is_attributed_and_timed(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERLINE_ACTOR", "ops@example.com")
    setup(store)
    ingest(store, clock(FEB), calls(1_500), batch_size=1_000)  # two batches
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    retract_event(store, "default", "c1", "test traffic", LATER_US)
    retract_event(store, "default", "c1", "test traffic", LATER_US)  # no-op: no row
    rerate(store, LATER_US)
    with acting_as("api:billing-bot"):
        invoicing.set_status(store, "CN-000001", Status.PAID, "refund", LATER_US)
    with pytest.raises(MeterlineError):
        invoicing.set_status(store, "CN-000001", Status.VOID, "too late", LATER_US)
    rerate(store, LATER_US, "acme", "2024-01", reason="customer dispute #42")
    # Voiding INV-000001 is refused now that its credit note is paid (SEMANTICS.md)
    # and a refused change leaves no audit row; paying it is recorded.
    with pytest.raises(MeterlineError):
        invoicing.set_status(store, "INV-000001", Status.VOID, "issued in error", LATER_US)
    invoicing.set_status(store, "INV-000001", Status.PAID, "paid", LATER_US)

    rows = entries(store)
    assert [r["action"] for r in rows] == [
        "catalog.apply",
        "ingest",
        "ingest",
        "ingest",  # the heartbeat that closes January
        "issue",
        "retract",
        "rerate",
        "pay",
        "rerate.mark",
        "pay",
    ]
    assert {r["actor"] for r in rows} == {"ops@example.com", "api:billing-bot"}
    assert rows[7]["actor"] == "api:billing-bot"
    assert rows[1]["details"]["accepted"] == 1_000 and rows[2]["details"]["accepted"] == 500
    assert rows[1]["at"] == FEB and rows[0]["at"] == "2024-01-01T00:00:00Z"
    assert rows[4]["details"]["number"] == "INV-000001"
    assert rows[6]["details"]["kind"] == "credit_note"
    assert rows[6]["details"]["corrects"] == "INV-000001"
    assert rows[8]["details"] == {"number": "INV-000001", "reason": "customer dispute #42"}
    assert rows[9]["at"] == format_us(LATER_US)
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs)
    assert entries(store, limit=2) == rows[-2:]
    assert [r["action"] for r in entries(store, action="ingest")] == ["ingest"] * 3


def test_the_audit_command(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERLINE_ACTOR", "cli-user")
    setup(store)
    runner = CliRunner()
    result = runner.invoke(app, ["--db", store.url, "audit", "--json", "--limit", "5"])
    assert result.exit_code == 0, result.output
    [row] = json.loads(result.stdout)
    assert row["action"] == "catalog.apply" and row["actor"] == "cli-user"
    assert row["details"]["added"]["items"][0] == "meter api_calls"
    human = runner.invoke(app, ["--db", store.url, "audit"])
    assert human.exit_code == 0 and "catalog.apply" in human.stdout
