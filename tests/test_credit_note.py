"""Table tests of the correction diff (billing/credit_note.py, DESIGN §8)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meterline.billing import body as typed
from meterline.billing.credit_note import BilledSoFar, diff
from meterline.billing.document import Kind
from meterline.domain.decimals import fmt
from meterline.domain.money import Currency, money_str

USD = Currency("USD")


def line(
    charge: str, qty: str | None, amount: str, dims: dict[str, Any] | None = None
) -> typed.Line:
    return typed.Line(
        line=1,
        charge=charge,
        description=charge,
        price_book="std",
        model="per_unit",
        meter="m",
        dimensions=dims or {},
        quantity=None if qty is None else Decimal(qty),
        unit_price=Decimal("0.1"),
        amount=Decimal(amount),
        formula=f"{qty} x 0.1 = {amount}",
        explanation=None,
        usage=typed.Usage(event_count=1, window="1h"),
    )


def body(lines: list[typed.Line], tax: str, cutoff: int = 10) -> typed.Body:
    return typed.Body(
        kind="invoice",
        customer_id="c",
        customer_name="C",
        currency="USD",
        timezone="UTC",
        period=typed.Period(start="2024-01-01T00:00:00Z", end="2024-02-01T00:00:00Z", label="x"),
        subscriptions=(),
        lines=tuple(lines),
        subtotal=sum((x.amount for x in lines), Decimal(0)),
        tax_rate=Decimal("0.2"),
        tax=Decimal(tax),
        credits=(),
        credits_applied=Decimal(0),
        total=Decimal(0),
        corrects=None,
        reasons=(),
        cutoff_seq=cutoff,
        price_versions=(),
    )


A = {"model": "a"}
B = {"model": "b"}

CASES: dict[str, tuple[list[typed.Body], list[typed.Line], str, Any]] = {
    # name: (billed bodies, new lines, new tax, expected (kind, [(charge, dims, dq, da)], sub, tax, total) or None)
    "nothing changed": (
        [body([line("api", "10", "1.00")], "0.20")],
        [line("api", "10", "1.00")],
        "0.20",
        None,
    ),
    "more usage: debit note": (
        [body([line("api", "10", "1.00")], "0.20")],
        [line("api", "15", "1.50")],
        "0.30",
        (Kind.DEBIT_NOTE, [("api", {}, "5", "0.50")], "0.50", "0.10", "0.60"),
    ),
    "less usage: credit note": (
        [body([line("api", "10", "1.00")], "0.20")],
        [line("api", "4", "0.40")],
        "0.08",
        (Kind.CREDIT_NOTE, [("api", {}, "-6", "-0.60")], "-0.60", "-0.12", "-0.72"),
    ),
    "a line no longer billed": (
        [body([line("api", "10", "1.00"), line("tok", "3", "0.30", A)], "0.26")],
        [line("api", "10", "1.00")],
        "0.20",
        (Kind.CREDIT_NOTE, [("tok", A, "-3", "-0.30")], "-0.30", "-0.06", "-0.36"),
    ),
    "a new dimension group": (
        [body([line("tok", "3", "0.30", A)], "0.06")],
        [line("tok", "3", "0.30", A), line("tok", "2", "0.20", B)],
        "0.10",
        (Kind.DEBIT_NOTE, [("tok", B, "2", "0.20")], "0.20", "0.04", "0.24"),
    ),
    "usage moves between groups at one price: zero credit note": (
        [body([line("tok", "3", "0.30", A)], "0.06")],
        [line("tok", "3", "0.30", B)],
        "0.06",
        (
            Kind.CREDIT_NOTE,
            [("tok", B, "3", "0.30"), ("tok", A, "-3", "-0.30")],
            "0.00",
            "0.00",
            "0.00",
        ),
    ),
    "tax only (a tax rate change)": (
        [body([line("api", "10", "1.00")], "0.20")],
        [line("api", "10", "1.00")],
        "0.25",
        (Kind.DEBIT_NOTE, [], "0.00", "0.05", "0.05"),
    ),
    "billed = invoice + earlier notes; tax delta against all of it": (
        [
            body([line("api", "10", "1.00")], "0.20", cutoff=10),
            body([line("api", "5", "0.50")], "0.10", cutoff=20),
        ],
        [line("api", "17", "1.70")],
        "0.34",
        (Kind.DEBIT_NOTE, [("api", {}, "2", "0.20")], "0.20", "0.04", "0.24"),
    ),
    "tax delta is tax(new) - tax(billed), not tax(delta)": (
        # 19% tax: tax(1.03) = 0.20 was billed, tax(1.06) = 0.20 is due: delta 0.00,
        # where taxing the 0.03 delta on its own would give 0.01 (drift).
        [body([line("api", "103", "1.03")], "0.20")],
        [line("api", "106", "1.06")],
        "0.20",
        (Kind.DEBIT_NOTE, [("api", {}, "3", "0.03")], "0.03", "0.00", "0.03"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_correction_diff(name: str) -> None:
    billed_bodies, new_lines, new_tax, expected = CASES[name]
    billed = BilledSoFar.of(billed_bodies)
    got = diff(billed, new_lines, Decimal(new_tax))
    if expected is None:
        assert got is None
        return
    kind, lines, subtotal, tax, total = expected
    assert got is not None
    assert got.kind == kind
    assert [
        (ln.charge, ln.dimensions, fmt(ln.quantity or 0), money_str(ln.amount, USD))
        for ln in got.lines
    ] == lines
    assert [ln.line for ln in got.lines] == list(range(1, len(lines) + 1))
    assert (got.subtotal, got.tax, got.total) == (Decimal(subtotal), Decimal(tax), Decimal(total))


def test_a_changed_line_says_what_was_billed_and_what_is_due() -> None:
    billed = BilledSoFar.of([body([line("api", "10", "1.00")], "0.20", cutoff=7)])
    got = diff(billed, [line("api", "12", "1.20")], Decimal("0.24"))
    assert got is not None and billed.cutoff == 7
    (ln,) = got.lines
    assert (ln.billed_quantity, ln.billed_amount) == (Decimal(10), Decimal("1.00"))
    assert (ln.new_quantity, ln.new_amount) == (Decimal(12), Decimal("1.20"))
    gone = diff(billed, [], Decimal(0))
    assert gone is not None and gone.lines[0].formula == "no longer billed"
    assert gone.lines[0].usage is None and gone.kind == Kind.CREDIT_NOTE


def test_dimension_order_does_not_change_line_identity() -> None:
    """Identity = price book + charge + dimension values, whatever the key order."""
    billed = BilledSoFar.of([body([line("tok", "3", "0.30", {"a": "1", "b": None})], "0")])
    assert diff(billed, [line("tok", "3", "0.30", {"b": None, "a": "1"})], Decimal(0)) is None
