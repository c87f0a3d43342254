"""The pure posting rules (docs/LEDGER.md): balanced, signed, reversible."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meterline.billing import body as typed
from meterline.domain.money import Currency
from meterline.ledger import (
    CASH,
    TAX_PAYABLE,
    AccountType,
    EntryKind,
    Line,
    account_type,
    customer_credit,
    customer_of,
    discounts,
    from_minor,
    issue_entry,
    payment_entry,
    receivable,
    revenue,
    status_entry,
    to_minor,
    void_entry,
)


def body(
    lines: list[tuple[str, str]],
    tax: str = "0.00",
    credits: str = "0.00",
    kind: str = "invoice",
    currency: str = "USD",
    models: dict[str, str] | None = None,
    total: str | None = None,
) -> typed.Body:
    subtotal = sum((Decimal(a) for _, a in lines), Decimal(0))
    return typed.Body(
        kind=kind,
        customer_id="acme",
        customer_name="Acme",
        currency=currency,
        timezone="UTC",
        period=typed.Period(start="2024-01-01T00:00:00Z", end="2024-02-01T00:00:00Z",
                            label="2024-01"),
        subscriptions=(),
        lines=tuple(
            typed.Line(line=i, charge=c, description=c, price_book="b",
                       model=(models or {}).get(c, "per_unit"), meter=None, dimensions={},
                       quantity=None, unit_price=None, amount=Decimal(a), formula="",
                       explanation=None, usage=None)
            for i, (c, a) in enumerate(lines, start=1)
        ),
        subtotal=subtotal,
        tax_rate=Decimal(0),
        tax=Decimal(tax),
        credits=(),
        credits_applied=Decimal(credits),
        total=Decimal(total) if total else subtotal + Decimal(tax) - Decimal(credits),
        corrects=None,
        reasons=(),
        cutoff_seq=1,
        price_versions=(),
    )  # fmt: skip


def sides(entry: Any) -> dict[str, Decimal]:
    return {ln.account: ln.signed for ln in entry.lines}


def test_worked_example_of_the_docs() -> None:
    # 180.00 of api + 49.00 platform, 20% tax 45.80, 10.00 prepaid credit: total 264.80.
    e = issue_entry(
        "INV-000001", body([("api", "180.00"), ("platform", "49.00")], "45.80", "10.00")
    )
    assert e.kind == EntryKind.ISSUE and e.balanced
    assert sides(e) == {
        receivable("acme"): Decimal("264.80"),
        customer_credit("acme"): Decimal("10.00"),
        revenue("api"): Decimal("-180.00"),
        revenue("platform"): Decimal("-49.00"),
        TAX_PAYABLE: Decimal("-45.80"),
    }
    assert e.debits == e.credits == Decimal("274.80")


def test_lines_of_one_charge_are_summed_and_zero_amounts_post_nothing() -> None:
    e = issue_entry("INV-000002", body([("api", "10.00"), ("api", "2.50"), ("flat", "0.00")]))
    assert sides(e) == {receivable("acme"): Decimal("12.50"), revenue("api"): Decimal("-12.50")}


def test_a_credit_note_posts_signed_amounts_on_the_other_side() -> None:
    e = issue_entry(
        "CN-000001", body([("api", "-30.00"), ("seats", "5.00")], "-5.00", kind="credit_note")
    )
    assert e.balanced
    assert sides(e) == {
        receivable("acme"): Decimal("-30.00"),
        revenue("api"): Decimal("30.00"),
        revenue("seats"): Decimal("-5.00"),
        TAX_PAYABLE: Decimal("5.00"),
    }
    assert all(ln.debit >= 0 and ln.credit >= 0 for ln in e.lines)


def test_payment_and_void() -> None:
    b = body([("api", "100.00")], "20.00")
    pay = payment_entry("INV-000001", b)
    assert pay.kind == EntryKind.PAYMENT
    assert sides(pay) == {CASH: Decimal("120.00"), receivable("acme"): Decimal("-120.00")}
    void = void_entry("INV-000001", b)
    issued = issue_entry("INV-000001", b)
    assert void.kind == EntryKind.VOID
    assert {a: -v for a, v in sides(issued).items()} == sides(void)
    assert status_entry("INV-000001", "paid", b) == pay
    assert status_entry("INV-000001", "void", b) == void
    assert status_entry("INV-000001", "issued", b) is None


def test_a_refunded_credit_note_pays_cash_out() -> None:
    pay = payment_entry("CN-000001", body([("api", "-7.00")], kind="credit_note"))
    assert sides(pay) == {CASH: Decimal("-7.00"), receivable("acme"): Decimal("7.00")}


def test_inconsistent_documents_cannot_post() -> None:
    b = body([("api", "100.00")], total="99.00")
    with pytest.raises(ValueError, match="does not balance"):
        issue_entry("INV-000009", b)
    b = body([("api", "100.001")])
    with pytest.raises(ValueError, match="not a USD amount"):
        issue_entry("INV-000009", b)


def test_minor_units_are_exact_per_currency() -> None:
    usd, jpy, bhd = Currency("USD"), Currency("JPY"), Currency("BHD")
    assert to_minor(Decimal("180.00"), usd) == 18000
    assert to_minor(Decimal("1500"), jpy) == 1500
    assert to_minor(Decimal("1.234"), bhd) == 1234
    assert from_minor(18000, usd) == Decimal("180.00") and str(from_minor(5, usd)) == "0.05"
    assert str(from_minor(1500, jpy)) == "1500"
    with pytest.raises(ValueError):
        to_minor(Decimal("0.001"), usd)
    e = issue_entry("INV-000001", body([("api", "1500")], currency="JPY"))
    assert e.currency == "JPY" and e.balanced


def test_chart_of_accounts() -> None:
    assert account_type(receivable("a:b")) == AccountType.ASSET
    assert customer_of(receivable("a:b")) == "a:b"
    assert customer_of(revenue("api")) is None
    assert account_type(CASH).debit_normal
    assert not account_type(TAX_PAYABLE).debit_normal
    assert account_type(customer_credit("x")) == AccountType.LIABILITY
    assert account_type(revenue("api")) == AccountType.REVENUE
    with pytest.raises(ValueError):
        account_type("suspense")
    with pytest.raises(ValueError):
        Line("cash", Decimal(1), Decimal(1))


def test_a_cap_line_debits_contra_revenue_600_usage_capped_at_500() -> None:
    doc = body(
        [("api", "600.00"), ("maximum_spend", "-100.00")], models={"maximum_spend": "maximum_spend"}
    )
    e = issue_entry("INV-000003", doc)
    assert e.balanced
    assert sides(e) == {
        receivable("acme"): Decimal("500.00"),
        revenue("api"): Decimal("-600.00"),
        discounts("maximum_spend"): Decimal("100.00"),
    }
    assert account_type(discounts("maximum_spend")) == AccountType.REVENUE


def test_a_credit_note_reducing_a_cap_credits_contra_revenue() -> None:
    """A late refund lowers usage from 600 to 550: api -50, the cap line +50 (less excess)."""
    doc = body(
        [("api", "-50.00"), ("maximum_spend", "50.00")],
        kind="credit_note",
        models={"maximum_spend": "maximum_spend"},
    )
    e = issue_entry("CN-000002", doc)
    assert e.balanced
    assert sides(e) == {
        revenue("api"): Decimal("50.00"),
        discounts("maximum_spend"): Decimal("-50.00"),
    }
