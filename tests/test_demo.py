"""The demo's story runs end to end and every number in it is provable."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console

from meterline.billing.document import Kind
from meterline.demo.catalog import ANNIVERSARY_INDEX, PROGRESSIVE_INDEX, PROGRESSIVE_THRESHOLD
from meterline.demo.run import LATE_CUSTOMER_INDEX, RETRACT_CUSTOMER_INDEX, run_demo
from meterline.demo.workload import Workload

pytestmark = pytest.mark.xdist_group("demo")


def test_small_demo_month_end_to_end(tmp_path: Path) -> None:
    workload = Workload(customers=30, events=20_000)
    outcome = run_demo(tmp_path, workload, Console(file=io.StringIO()))
    ids = workload.customer_ids()

    assert outcome.ingest is not None and outcome.ingest.rejected == workload.malformed
    assert len(outcome.invoices) == workload.customers - 1  # the last customer is unknown
    # progressive billing: one interim in the open January, netted by the final invoice
    progressive = ids[PROGRESSIVE_INDEX]
    [interim] = outcome.interims
    assert interim.body.customer_id == progressive and interim.body.role == "interim"
    assert interim.body.subtotal >= Decimal(PROGRESSIVE_THRESHOLD)
    [final] = [d for d in outcome.invoices if d.body.customer_id == progressive]
    assert final.body.role == "final" and final.body.interims == (interim.number,)
    whole = final.body.period_subtotal
    assert interim.body.subtotal + final.body.subtotal == whole
    # the anniversary customer's first period: December 20th to January 20th
    [anniversary] = [d for d in outcome.invoices if d.body.customer_id == ids[ANNIVERSARY_INDEX]]
    assert anniversary.body.period.label == "2023-12-20"
    assert anniversary.body.period.end == "2024-01-20T00:00:00Z"
    assert anniversary.body.subscriptions[0].anchor == "subscription"
    by_customer = {n.body.customer_id: n for n in outcome.notes}
    late = by_customer[ids[LATE_CUSTOMER_INDEX]]
    assert late.kind == Kind.DEBIT_NOTE and Decimal(late.to_dict()["total"]) > 0
    retracted = by_customer[ids[RETRACT_CUSTOMER_INDEX]]
    assert retracted.kind == Kind.CREDIT_NOTE and "40 events retracted" in retracted.body.reasons
    yen = [n for n in outcome.notes if n.body.currency == "JPY"]
    assert yen and all(n.kind == Kind.CREDIT_NOTE for n in yen)
    assert all("." not in n.to_dict()["total"] for n in yen)  # whole yen
    assert outcome.verified and outcome.reconciled is not False
    assert outcome.paid == len(outcome.invoices) // 2
    documents = sorted(p.name for p in (tmp_path / "documents").glob("*.json"))
    assert len(documents) == len(outcome.invoices) + len(outcome.interims) + len(outcome.notes)
    assert outcome.pdfs and all(p.read_bytes().startswith(b"%PDF") for p in outcome.pdfs)
