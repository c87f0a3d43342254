"""per_unit: quantity x unit_price (DESIGN §5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.domain.money import Currency, round_money
from meterline.pricing.charges import PerUnit
from meterline.pricing.per_unit import price_per_unit

USD = Currency("USD")


@pytest.mark.parametrize(
    ("quantity", "unit_price", "exact", "rounded", "term"),
    [
        ("1234", "0.02", "24.68", "24.68", "1,234 x 0.02"),
        ("0", "0.02", "0", "0.00", "0 x 0.02"),
        ("1", "0.015", "0.015", "0.02", "1 x 0.015"),
        ("3", "0.0033", "0.0099", "0.01", "3 x 0.0033"),
        ("0.5", "3", "1.5", "1.50", "0.5 x 3.00"),
        ("1000000", "0.00001", "10", "10.00", "1,000,000 x 0.00001"),
        ("-10", "0.02", "-0.2", "-0.20", "-10 x 0.02"),  # a sum over credit events
    ],
)
def test_per_unit(quantity: str, unit_price: str, exact: str, rounded: str, term: str) -> None:
    charge = PerUnit("api", "api_calls", Decimal(unit_price))
    priced = price_per_unit(charge, Decimal(quantity), USD)
    assert priced.amount == Decimal(exact)
    assert str(round_money(priced.amount, USD)) == rounded
    assert priced.terms == (term,)
    assert dict(priced.pricing) == {"unit_price": unit_price}


def test_negative_unit_price_is_refused() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        PerUnit("api", "api_calls", Decimal("-0.01"))
