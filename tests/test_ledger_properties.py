"""Hypothesis (DESIGN §9): for random histories of issues, payments, voids and
corrections, every journal entry balances and each customer's receivable is
the sum of its open documents.

Notes count like any document: a credit note (negative total) reduces what
the customer owes until it is paid (refunded) or voided; a debit note adds to
it. "Open" = issued, neither paid nor void.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from tests.billing_support import FEB, FEB_US, V1, catalog, clock, close_january
from tests.conftest import reset
from tests.support import event, ingest

from meterline.billing.document import Status
from meterline.domain.errors import MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.ledger import balances, journal
from meterline.services.reconcile import reconcile
from meterline.services.retraction import retract_event
from meterline.store import documents
from meterline.store.database import Store

LATER_US = parse_rfc3339("2024-02-03T00:00:00Z")
NAMES = ("acme", "beta")
CUSTOMERS = [
    {
        "id": c,
        "name": c,
        "currency": "USD",
        "tax_rate": "0.19" if c == "acme" else "0",
        "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
        "credits": [{"id": "g", "amount": "0.50", "granted_at": "2023-12-01T00:00:00Z"}]
        if c == "beta"
        else [],
    }
    for c in NAMES
]

usage = st.lists(st.tuples(st.integers(1, 31), st.sampled_from(NAMES)), max_size=25)
op = st.one_of(
    st.tuples(st.just("late"), usage),
    st.tuples(st.just("retract"), st.integers(0, 10**6)),
    st.tuples(st.just("rerate"), st.none()),
    st.tuples(st.just("pay"), st.integers(0, 10**6)),
    st.tuples(st.just("void"), st.integers(0, 10**6)),
)


def ev(i: int, day: int, customer: str) -> dict[str, Any]:
    return event(f"e{i}", customer=customer, time=f"2024-01-{day:02d}T{i % 24:02d}:00:00Z")


def play(store: Store, initial: list[Any], ops: list[Any]) -> None:
    reset(store)
    apply_catalog(store, catalog(V1, customers=CUSTOMERS), parse_rfc3339("2024-01-01T00:00:00Z"))
    ingest(store, clock(FEB), [ev(i, d, c) for i, (d, c) in enumerate(initial)], batch_size=17)
    close_january(store)
    invoicing.issue(store, "2024-01", FEB_US)
    n = len(initial)
    for kind, arg in ops:
        if kind == "late":
            ingest(
                store,
                clock("2024-02-03T00:00:00Z"),
                [ev(n + j, d, c) for j, (d, c) in enumerate(arg)],
            )
            n += len(arg)
        elif kind == "retract" and n:
            retract_event(store, "default", f"e{arg % n}", "dispute", LATER_US)
        elif kind == "rerate":
            rerate(store, LATER_US)
        else:
            docs = invoicing.list_all(store)
            if docs:
                target = docs[arg % len(docs)].number
                status = Status.PAID if kind == "pay" else Status.VOID
                # Already paid or void: refused, and nothing is posted.
                with contextlib.suppress(MeterlineError):
                    invoicing.set_status(store, target, status, kind, LATER_US)


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(initial=usage, ops=st.lists(op, min_size=1, max_size=6))
def test_entries_balance_and_receivable_is_the_open_documents(
    store: Store, initial: list[Any], ops: list[Any]
) -> None:
    play(store, initial, ops)
    entries = journal(store)
    for e in entries:
        debits = sum((Decimal(ln["debit"]) for ln in e["lines"]), Decimal(0))
        credits = sum((Decimal(ln["credit"]) for ln in e["lines"]), Decimal(0))
        assert e["balanced"] and debits == credits, e
    with store.read() as conn:
        unbalanced = conn.execute(
            text(
                "SELECT entry_seq FROM journal_lines GROUP BY entry_seq "
                "HAVING SUM(debit_minor) <> SUM(credit_minor)"
            )
        ).all()
        docs = documents.list_documents(conn)
    assert unbalanced == []
    owed = {c: Decimal("0.00") for c in NAMES}
    for d in docs:
        if d.status == Status.ISSUED:
            owed[d.body.customer_id] += Decimal(d.to_dict()["total"])
    ledger = {c: Decimal("0.00") for c in NAMES}
    for b in balances(store):
        if b["account"].startswith("receivable:"):
            ledger[b["customer_id"]] = Decimal(b["balance"])
    assert ledger == owed
    # A fact was posted for every issue and every payment or void, and nothing else.
    assert len(entries) == len(docs) + sum(1 for d in docs if d.status != Status.ISSUED)
    report = reconcile(store)
    assert report.ok, report.to_json()
