"""Credit grants as facts (DESIGN §13): order, rollover, expiry, void, corrections,
the ledger and reconcile. On both backends."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import text
from tests.billing_support import FEB_US, calls, catalog, clock, close_january, setup
from tests.support import ingest

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import parse_rfc3339
from meterline.services import credits, invoicing, ledger
from meterline.services.corrections import rerate
from meterline.services.reconcile import reconcile
from meterline.services.retraction import retract_event
from meterline.services.verification import verify
from meterline.store import checkpoints
from meterline.store.database import Store

JAN1 = parse_rfc3339("2024-01-01T00:00:00Z")
LATER_US = parse_rfc3339("2024-02-03T00:00:00Z")


def _grant(store: Store, amount: str, **kw: object) -> str:
    row = credits.grant(store, "acme", amount, JAN1, **kw)  # type: ignore[arg-type]
    return str(row["id"])


def _january(store: Store, n: int) -> dict[str, object]:
    """Bill n calls in January (n <= 1000: n x 0.02)."""
    ingest(store, clock("2024-02-01T12:00:00Z"), calls(n))
    close_january(store)
    [doc] = invoicing.issue(store, "2024-01", FEB_US).issued
    return doc.to_dict()  # the public JSON: money as the document writes it


def _balance(store: Store, account: str) -> Decimal:
    for row in ledger.balances(store):
        if row["account"] == account:
            return Decimal(row["balance"])
    return Decimal(0)


def _clean(store: Store) -> None:
    report = reconcile(store, full=True)
    assert report.ok, [c.details for c in report.checks if not c.ok]
    assert verify(store).ok


def test_grants_are_used_by_priority_then_expiry_then_age(store: Store) -> None:
    setup(store)
    late = _grant(store, "5.00", grant_id="late", effective_at="2024-01-05T00:00:00Z")
    old = _grant(store, "5.00", grant_id="old", effective_at="2024-01-02T00:00:00Z")
    expiring = _grant(store, "5.00", grant_id="expiring", expires_at="2024-03-01T00:00:00Z")
    first = _grant(store, "5.00", grant_id="first", priority=1)
    body = _january(store, 600)  # 12.00 due
    assert body["credits"] == [
        {"grant": first, "amount": "5.00"},
        {"grant": expiring, "amount": "5.00"},
        {"grant": old, "amount": "2.00"},
    ]
    assert body["credits_applied"] == "12.00" and body["total"] == "0.00"
    rows = {r["id"]: r for r in credits.list_grants(store, "acme", FEB_US)}
    assert rows[late]["available"] == "5.00" and rows[old]["available"] == "3.00"
    _clean(store)


def test_a_grant_expired_or_not_yet_effective_at_the_period_end_is_not_used(
    store: Store,
) -> None:
    setup(store)
    _grant(store, "5.00", grant_id="gone", expires_at="2024-01-20T00:00:00Z")
    _grant(store, "5.00", grant_id="future", effective_at="2024-02-01T00:00:00Z")
    body = _january(store, 100)
    assert body["credits"] == [] and body["total"] == "2.00"
    # the January close posted the expired grant's breakage, once
    assert _balance(store, "credit_breakage") == Decimal("5.00")
    assert credits.expire(store, parse_rfc3339("2024-06-01T00:00:00Z")) == []
    _clean(store)


def test_rollover_keeps_the_cap_and_expires_the_rest_at_the_period_end(store: Store) -> None:
    setup(store)
    gid = _grant(store, "50.00", rollover="10.00")
    body = _january(store, 600)
    assert body["credits"] == [{"grant": gid, "amount": "12.00"}]
    b = credits.balance(store, "acme", LATER_US)
    assert (b["granted"], b["used"], b["expired"], b["available"]) == (
        "50.00",
        "12.00",
        "28.00",
        "10.00",
    )
    assert _balance(store, "credit_breakage") == Decimal("28.00")
    assert _balance(store, "customer_credit:acme") == Decimal("10.00")  # owed to acme
    _clean(store)


def test_expiry_breakage_is_posted_once(store: Store) -> None:
    setup(store)
    gid = _grant(store, "30.00", expires_at="2024-03-01T00:00:00Z", kind="promotional")
    _january(store, 100)  # uses 2.00; the grant has not expired at the January close
    assert credits.expire(store, parse_rfc3339("2024-02-15T00:00:00Z")) == []
    [posted] = credits.expire(store, parse_rfc3339("2024-03-02T00:00:00Z"))
    assert (posted["grant"], posted["amount"], posted["action"]) == (gid, "28.00", "expiry")
    assert credits.expire(store, parse_rfc3339("2024-04-02T00:00:00Z")) == []
    with store.read() as conn:
        n = conn.execute(
            text("SELECT COUNT(*) FROM credit_facts WHERE action = 'expiry'")
        ).scalar_one()
    assert n == 1
    assert _balance(store, "credit_breakage") == Decimal("28.00")
    assert _balance(store, "promotions") == Decimal("-30.00")  # contra-revenue: a debit
    b = credits.balance(store, "acme", parse_rfc3339("2024-04-02T00:00:00Z"))
    assert (b["used"], b["expired"], b["available"]) == ("2.00", "28.00", "0.00")
    _clean(store)


def test_void_releases_what_is_left_and_is_a_fact_once(store: Store) -> None:
    setup(store)
    gid = _grant(store, "20.00")
    _january(store, 600)
    row = credits.void(store, gid, "granted by mistake", LATER_US)
    assert (row["used"], row["voided"], row["available"], row["status"]) == (
        "12.00",
        "8.00",
        "0.00",
        "void",
    )
    with pytest.raises(MeterlineError) as again:
        credits.void(store, gid, "twice", LATER_US)
    assert again.value.code == ErrorCode.CREDIT_GRANT_VOID
    with pytest.raises(MeterlineError) as missing:
        credits.void(store, "nope", "no such grant", LATER_US)
    assert missing.value.code == ErrorCode.CREDIT_GRANT_NOT_FOUND
    assert _balance(store, "cash") == Decimal("12.00")  # 20 in, 8 back
    assert _balance(store, "customer_credit:acme") == Decimal("0.00")
    _clean(store)


def test_bad_grants_are_refused_with_a_code(store: Store) -> None:
    setup(store)
    for kw, code in [
        ({"amount": "-1"}, ErrorCode.INVALID_ARGUMENT),
        ({"amount": "1.001"}, ErrorCode.INVALID_ARGUMENT),
        ({"amount": "x"}, ErrorCode.INVALID_ARGUMENT),
        ({"amount": "1", "kind": "gift"}, ErrorCode.INVALID_ARGUMENT),
        ({"amount": "1", "expires_at": "2023-01-01T00:00:00Z"}, ErrorCode.INVALID_ARGUMENT),
    ]:
        amount = str(kw.pop("amount"))
        with pytest.raises(MeterlineError) as exc:
            credits.grant(store, "acme", amount, JAN1, **kw)  # type: ignore[arg-type]
        assert exc.value.code == code
    with pytest.raises(MeterlineError) as unknown:
        credits.grant(store, "nobody", "1", JAN1)
    assert unknown.value.code == ErrorCode.UNKNOWN_CUSTOMER
    _grant(store, "1.00", grant_id="dup")
    with pytest.raises(MeterlineError) as dup:
        _grant(store, "1.00", grant_id="dup")
    assert dup.value.code == ErrorCode.CREDIT_GRANT_EXISTS


def test_corrections_never_re_spread_credits(store: Store) -> None:
    """A credit note returns money to the receivable; a debit note is not paid from
    credits, even with credit available (docs/SEMANTICS.md "Credit grants")."""
    setup(store)
    gid = _grant(store, "20.00")
    body = _january(store, 600)
    assert body["total"] == "0.00"
    for i in range(100):
        retract_event(store, "default", f"c{i}", "duplicates", LATER_US)
    [note] = rerate(store, LATER_US).issued
    assert note.kind == "credit_note"
    assert (
        note.to_dict()["total"],
        note.to_dict()["credits_applied"],
        note.to_dict()["credits"],
    ) == (
        "-2.00",
        "0.00",
        [],
    )
    ingest(store, clock("2024-02-03T00:00:00Z"), calls(300, prefix="late"))
    [debit] = rerate(store, parse_rfc3339("2024-02-04T00:00:00Z")).issued
    assert debit.kind == "debit_note"
    assert debit.to_dict()["credits_applied"] == "0.00" and debit.to_dict()["total"] == "6.00"
    [row] = credits.list_grants(store, "acme", LATER_US)
    assert row["id"] == gid and (row["used"], row["available"]) == ("12.00", "8.00")
    assert _balance(store, "receivable:acme") == Decimal("4.00")  # 0 - 2.00 + 6.00
    _clean(store)


def test_voiding_an_invoice_returns_its_credit_to_the_grant(store: Store) -> None:
    setup(store)
    gid = _grant(store, "20.00")
    _january(store, 600)
    invoicing.set_status(store, "INV-000001", invoicing.Status.VOID, "wrong customer", LATER_US)
    [row] = credits.list_grants(store, "acme", LATER_US)
    assert row["id"] == gid and (row["used"], row["available"]) == ("0.00", "20.00")
    _clean(store)


def test_catalog_credits_keep_working_beside_grant_facts(store: Store) -> None:
    doc = catalog()
    doc["customers"][0]["credits"] = [
        {"id": "welcome", "amount": "3.00", "granted_at": "2024-01-01T00:00:00Z"},
        {
            "id": "promo",
            "amount": "4.00",
            "granted_at": "2024-01-01T00:00:00Z",
            "priority": 1,
            "kind": "promotional",
        },
    ]
    setup(store, doc)
    gid = _grant(store, "10.00", priority=5)
    body = _january(store, 600)
    assert body["credits"] == [
        {"grant": "promo", "amount": "4.00"},
        {"grant": gid, "amount": "8.00"},
    ]
    rows = {r["id"]: r for r in credits.list_grants(store, "acme", LATER_US)}
    assert rows["welcome"]["source"] == "catalog" and rows["welcome"]["available"] == "3.00"
    assert rows["promo"]["kind"] == "promotional"
    _clean(store)


def test_a_full_history_ties_out(store: Store) -> None:
    """Grants, uses, rollover, expiry, a void and a correction: balanced, reconciled."""
    setup(store)
    _grant(store, "20.00", rollover="5.00", grant_id="paid")
    _grant(store, "10.00", kind="promotional", expires_at="2024-02-15T00:00:00Z", grant_id="promo")
    _grant(store, "7.00", grant_id="spare", priority=50)
    body = _january(store, 700)  # 14.00: promo (expires first) 10.00, then paid 4.00
    assert body["credits"] == [
        {"grant": "promo", "amount": "10.00"},
        {"grant": "paid", "amount": "4.00"},
    ]
    assert reconcile(store, full=True).ok  # a checkpoint: what follows is incremental
    for i in range(50):
        retract_event(store, "default", f"c{i}", "duplicates", LATER_US)
    assert rerate(store, LATER_US).issued
    credits.void(store, "spare", "not needed", LATER_US)
    assert credits.expire(store, parse_rfc3339("2024-03-01T00:00:00Z")) == []
    b = credits.balance(store, "acme", parse_rfc3339("2024-03-01T00:00:00Z"))
    total = sum(Decimal(b[k]) for k in ("used", "expired", "voided", "available"))
    assert total == Decimal(b["granted"]) == Decimal("37.00")
    assert (b["expired"], b["voided"], b["available"]) == ("11.00", "7.00", "5.00")
    for entry in ledger.journal(store):
        assert entry["balanced"]
    grown = reconcile(store)  # a correction, a void, credit facts after the checkpoint
    assert grown.ok and grown.mode == "incremental", grown.to_json()
    _clean(store)
    with store.read() as conn:
        *_, incremental, full = checkpoints.all_checkpoints(conn)
    assert (incremental.mode, full.mode, incremental.seq) == ("incremental", "full", full.seq)
    assert incremental.state["carry"] == full.state["carry"]  # carried = recomputed
    assert reconcile(store).ok  # and incrementally after the clean run


def test_a_tampered_grant_is_caught(store: Store) -> None:
    setup(store)
    _grant(store, "20.00", grant_id="t1")
    _january(store, 100)
    assert reconcile(store, full=True).ok
    with store.write() as conn:
        conn.execute(text("UPDATE credit_facts SET amount = '200.00' WHERE grant_id = 't1'"))
    report = reconcile(store, full=True)
    failed = {c.name for c in report.checks if not c.ok}
    assert {"ledger_postings", "merkle_log"} <= failed


def test_the_split_invoice_run_settles_credits_too(store: Store) -> None:
    from meterline.services import invoice_run

    setup(store)
    gid = _grant(store, "50.00", rollover="10.00")
    ingest(store, clock("2024-02-01T12:00:00Z"), calls(600))
    close_january(store)
    [doc] = invoice_run.run(store, "2024-01", FEB_US).issued
    assert doc.to_dict()["credits"] == [{"grant": gid, "amount": "12.00"}]
    assert _balance(store, "credit_breakage") == Decimal("28.00")
    _clean(store)
