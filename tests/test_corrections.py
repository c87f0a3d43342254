"""Corrections on both backends (DESIGN §8): exact, explained, idempotent, verifiable."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, V1, calls, catalog, clock, close_january, setup
from tests.support import ingest

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.retraction import retract_event
from meterline.services.verification import verify
from meterline.store.database import Store

LATER = "2024-02-03T00:00:00Z"
LATER_US = parse_rfc3339(LATER)


def january_invoiced_at(store: Store, n: int) -> str:
    setup(store)
    ingest(store, clock(FEB), calls(n))
    close_january(store)
    [doc] = invoicing.issue(store, "2024-01", FEB_US).issued
    return doc.to_dict()["total"]


def test_late_events_crossing_a_tier_are_priced_at_the_right_tier(store: Store) -> None:
    assert january_invoiced_at(store, 9_500) == "147.50"
    ingest(store, clock(LATER), calls(1_000, prefix="late"))
    [note] = rerate(store, LATER_US).issued
    assert note.number == "DN-000001"
    assert note.to_dict()["total"] == "12.50"  # 500 x 0.015 + 500 x 0.01, not 10.00 or 15.00
    [line] = note.to_dict()["lines"]
    assert (line["quantity"], line["billed_amount"], line["new_amount"]) == (
        "1000",
        "147.50",
        "160.00",
    )
    assert list(note.body.reasons) == ["1000 events received after INV-000001 was issued"]
    assert note.body.corrects == "INV-000001"


def test_retractions_issue_a_credit_note(store: Store) -> None:
    january_invoiced_at(store, 9_500)
    for i in range(2_000):
        retract_event(store, "default", f"c{i}", "duplicated by a faulty gateway", LATER_US)
    [note] = rerate(store, LATER_US).issued
    assert note.kind == "credit_note" and note.number == "CN-000001"
    assert note.to_dict()["total"] == "-30.00"  # 7,500 units: 117.50 instead of 147.50
    assert list(note.body.reasons) == ["2000 events retracted"]


def test_retroactive_price_version_needs_the_flag_and_is_corrected(store: Store) -> None:
    january_invoiced_at(store, 9_500)
    fix = copy.deepcopy(V1)
    fix.update(version="v1b", supersedes="v1", reason="tier 2 was mistyped")
    fix["charges"][0]["tiers"][1]["unit_price"] = "0.012"
    with pytest.raises(MeterlineError) as info:
        apply_catalog(store, catalog(V1, fix), LATER_US)
    assert info.value.code == ErrorCode.RETROACTIVE_VERSION_REQUIRED
    fix["retroactive"] = True
    apply_catalog(store, catalog(V1, fix), LATER_US)
    [note] = rerate(store, LATER_US).issued
    assert note.to_dict()["total"] == "-25.50"  # 8,500 x (0.012 - 0.015)
    assert list(note.body.reasons) == [
        "price version v1b of standard recorded retroactively: tier 2 was mistyped"
    ]
    with store.read() as conn:
        kinds = [r[0] for r in conn.execute(text("SELECT kind FROM rerate_marks"))]
    assert "price" in kinds


def test_rerate_is_idempotent(store: Store) -> None:
    january_invoiced_at(store, 9_500)
    assert rerate(store, LATER_US).issued == []
    ingest(store, clock(LATER), calls(10, prefix="late"))
    assert len(rerate(store, LATER_US).issued) == 1
    second = rerate(store, LATER_US)
    assert second.issued == [] and second.unchanged == []  # nothing pending: not even recomputed
    named = rerate(store, LATER_US, "acme", "2024-01")
    assert named.issued == [] and named.unchanged == ["INV-000001"]


def test_corrections_accumulate_against_what_was_billed(store: Store) -> None:
    january_invoiced_at(store, 9_500)
    ingest(store, clock(LATER), calls(1_000, prefix="late"))
    rerate(store, LATER_US)
    ingest(store, clock(LATER), calls(500, prefix="later"))
    [second] = rerate(store, LATER_US).issued
    assert second.to_dict()["total"] == "5.00"  # 500 x 0.01 on top of 10,500 already billed
    assert second.to_dict()["lines"][0]["billed_amount"] == "160.00"


def test_manual_mark_with_reason(store: Store) -> None:
    january_invoiced_at(store, 100)
    result = rerate(store, LATER_US, "acme", "2024-01", reason="customer dispute #42")
    assert result.issued == [] and result.unchanged == ["INV-000001"]
    with store.read() as conn:
        assert (
            conn.execute(text("SELECT reason FROM rerate_marks WHERE kind = 'manual'")).scalar_one()
            == "customer dispute #42"
        )


def test_verify_passes_for_every_document_and_catches_tampering(store: Store) -> None:
    january_invoiced_at(store, 9_500)
    ingest(store, clock(LATER), calls(1_000, prefix="late"))
    rerate(store, LATER_US)
    retract_event(store, "default", "c1", "dispute", LATER_US)
    rerate(store, LATER_US)
    report = verify(store)
    assert report.ok, report.checks
    assert {c["name"].split()[0] for c in report.checks} == {"INV-000001", "DN-000001", "CN-000001"}
    with store.write() as conn:
        conn.execute(
            text(
                "UPDATE documents SET total = '0.00', body = REPLACE(body, '\"12.50\"', '\"2.50\"') WHERE number = 'DN-000001'"
            )
        )
    bad = verify(store)
    assert not bad.ok
    failed = {c["name"] for c in bad.checks if not c["ok"]}
    assert "DN-000001 body unaltered" in failed


def test_deleting_a_document_breaks_the_chain(store: Store) -> None:
    january_invoiced_at(store, 100)
    ingest(store, clock(LATER), calls(10, prefix="late"))
    rerate(store, LATER_US)
    ingest(store, clock(LATER), calls(10, prefix="later"))
    rerate(store, LATER_US)
    with store.write() as conn:
        conn.execute(text("DELETE FROM documents WHERE number = 'DN-000001'"))
    report = verify(store)
    assert any(c["name"] == "DN-000002 chain" and not c["ok"] for c in report.checks)
