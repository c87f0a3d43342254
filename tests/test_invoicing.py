"""Invoices on both backends (DESIGN §7): periods, closing, numbering, explanations."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, calls, catalog, clock, close_january, setup
from tests.support import event, ingest

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.services import invoicing
from meterline.services.explain import explain
from meterline.services.verification import verify
from meterline.store.database import Store


def test_graduated_invoice_with_explanation(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(12_500))
    close_january(store)
    result = invoicing.issue(store, "2024-01", FEB_US)
    [doc] = result.issued
    assert doc.number == "INV-000001"
    line = doc.to_dict()["lines"][0]
    assert (line["quantity"], line["amount"]) == ("12500", "180.00")
    assert line["formula"] == "1,000 x 0.02 + 9,000 x 0.015 + 2,500 x 0.01 = 180.00"
    tiers = line["explanation"]["segments"][0]["tiers"]
    assert sum(Decimal(t["amount"]) for t in tiers) == Decimal(line["amount"])
    assert line["usage"]["event_count"] == 12_500
    assert (doc.to_dict()["subtotal"], doc.to_dict()["tax"], doc.to_dict()["total"]) == (
        "180.00",
        "0.00",
        "180.00",
    )


def test_issuing_twice_issues_once(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(10))
    close_january(store)
    first = invoicing.issue(store, "2024-01", FEB_US)
    second = invoicing.issue(store, "2024-01", FEB_US)
    assert len(first.issued) == 1 and second.issued == []
    assert second.already == [("acme", "INV-000001")]
    with store.read() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM documents")).scalar_one() == 1


def test_period_not_closed_until_the_watermark_passes(store: Store) -> None:
    setup(store)
    ingest(
        store,
        clock("2024-01-31T23:00:00Z"),
        [*calls(10), event("late-jan", time="2024-01-31T22:59:00Z")],
    )
    with pytest.raises(MeterlineError) as info:
        invoicing.issue(store, "2024-01", FEB_US, customer="acme")
    assert info.value.code == ErrorCode.PERIOD_NOT_CLOSED
    assert "2024-02-01T03:00:00Z" in info.value.message  # end + 1h window + 3h lateness
    forced = invoicing.issue(store, "2024-01", FEB_US, customer="acme", force=True)
    assert forced.issued[0].forced is True
    assert forced.issued[0].to_dict()["forced"] is True


def test_tokyo_customer_bills_by_local_month(store: Store) -> None:
    tokyo = {
        "id": "tokyo",
        "name": "Tokyo KK",
        "currency": "USD",
        "timezone": "Asia/Tokyo",
        "subscriptions": [{"price_book": "standard", "start": "2023-12-01T00:00:00Z"}],
    }
    setup(store, catalog(dict(V1_EARLY), customers=[tokyo]))
    ingest(
        store,
        clock("2024-02-05T00:00:00Z"),
        [
            event("jan", customer="tokyo", time="2024-01-31T14:59:59Z"),
            event("feb", customer="tokyo", time="2024-01-31T16:00:00Z"),
            event("hb", customer="x", type_="ping", time="2024-02-05T00:00:00Z"),
        ],
    )
    jan = invoicing.preview(store, "tokyo", "2024-01")
    feb = invoicing.preview(store, "tokyo", "2024-02")
    assert jan["period"]["start"] == "2023-12-31T15:00:00Z"
    assert (jan["lines"][0]["quantity"], feb["lines"][0]["quantity"]) == ("1", "1")


V1_EARLY = {
    "version": "v1",
    "effective_from": "2023-12-01T00:00:00Z",
    "charges": [
        {
            "code": "api",
            "meter": "api_calls",
            "model": "graduated",
            "tiers": [{"up_to": None, "unit_price": "1.00"}],
        }
    ],
}


def test_preview_is_a_draft_without_number(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(3))
    draft = invoicing.preview(store, "acme", "2024-01")
    assert draft["number"] is None and draft["status"] == "draft"
    with pytest.raises(MeterlineError) as info:
        invoicing.preview(store, "nobody", "2024-01")
    assert info.value.code == ErrorCode.UNKNOWN_CUSTOMER


def test_tax_credits_flat_fee_and_minimum(store: Store) -> None:
    version = {
        "version": "v1",
        "effective_from": "2024-01-01T00:00:00Z",
        "minimum_spend": {
            "amount": "100.00",
            "prorate": False,
        },  # prorated: tests/test_pricing_invoices.py
        "charges": [
            {"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": "0.10"},
            {"code": "platform", "model": "flat", "amount": "49.00"},
        ],
    }
    customer = {
        "id": "acme",
        "name": "Acme",
        "currency": "USD",
        "tax_rate": "0.20",
        "subscriptions": [{"price_book": "standard", "start": "2024-01-17T00:00:00Z"}],
        "credits": [{"id": "welcome", "amount": "30.00", "granted_at": "2024-01-01T00:00:00Z"}],
    }
    setup(store, catalog(version, customers=[customer]))
    ingest(store, clock(FEB), calls(100, day=20))
    body = invoicing.preview(store, "acme", "2024-01")
    amounts = {line["charge"]: line["amount"] for line in body["lines"]}
    assert amounts == {
        "api": "10.00",
        "platform": "23.71",
        "minimum_spend": "90.00",
    }  # 49 x 15/31 days
    assert (body["subtotal"], body["tax"], body["credits_applied"], body["total"]) == (
        "123.71",
        "24.74",
        "30.00",
        "118.45",
    )


def test_explain_drills_down_to_the_events(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(30))
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    out = explain(store, "INV-000001", line=1, events=True, limit=10, offset=25)
    assert out["page"] == {"offset": 25, "limit": 10, "total": 30}
    assert len(out["events"]) == 5
    assert out["count_matches"] is True and "digest" not in out  # format 2: no key digest
    # a browser page reads only up to its last event; the total is the line's count
    for offset in (0, 10, 25):
        paged = explain(store, "INV-000001", 1, True, 10, offset, count=False)
        counted = explain(store, "INV-000001", 1, True, 10, offset)
        assert paged["events"] == counted["events"]
        assert paged["page"] == counted["page"] and "count_matches" not in paged


def test_verify_detects_an_altered_document(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(50))
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    assert verify(store).ok
    with store.write() as conn:
        body = conn.execute(text("SELECT body FROM documents")).scalar_one()
        conn.execute(
            text("UPDATE documents SET body = :b"), {"b": body.replace('"1.00"', '"0.50"')}
        )
    report = verify(store)
    assert not report.ok
    assert any(not c["ok"] and "INV-000001" in c["name"] for c in report.checks)


def test_status_changes_are_facts(store: Store) -> None:
    setup(store)
    ingest(store, clock(FEB), calls(5))
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    invoicing.set_status(store, "INV-000001", invoicing.Status.PAID, "wire", FEB_US)
    assert invoicing.show(store, "INV-000001").status == "paid"
    with pytest.raises(MeterlineError) as info:
        invoicing.set_status(store, "INV-000001", invoicing.Status.VOID, "x", FEB_US)
    assert info.value.code == ErrorCode.INVALID_STATUS_CHANGE


def _issue_in_subprocess(url: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "meterline",
            "--db",
            url,
            "--now",
            FEB,
            "invoice",
            "issue",
            "--period",
            "2024-01",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_concurrent_issue_runs_number_without_gaps(store: Store) -> None:
    customers = [
        {
            "id": f"c{i:02d}",
            "name": f"C{i}",
            "currency": "USD",
            "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
        }
        for i in range(24)
    ]
    setup(store, catalog(customers=customers))
    ingest(
        store,
        clock(FEB),
        [e for i in range(24) for e in calls(3, prefix=f"k{i}-", customer=f"c{i:02d}")],
    )
    close_january(store)
    procs = [_issue_in_subprocess(store.url) for _ in range(3)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with store.read() as conn:
        numbers = sorted(str(r[0]) for r in conn.execute(text("SELECT number FROM documents")))
        per_customer = conn.execute(
            text("SELECT COUNT(DISTINCT customer_id) FROM documents")
        ).scalar_one()
    assert numbers == [f"INV-{i:06d}" for i in range(1, 25)]
    assert per_customer == 24
    assert verify(store).ok
