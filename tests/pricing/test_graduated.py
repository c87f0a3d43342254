"""graduated: each tier prices the units in its own range (DESIGN §5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.domain.money import Currency, round_money
from meterline.pricing.charges import Graduated, Tier
from meterline.pricing.graduated import price_graduated, tier_ranges

USD = Currency("USD")


def tier(up_to: int | None, unit_price: str, flat_fee: str = "0") -> Tier:
    return Tier(None if up_to is None else Decimal(up_to), Decimal(unit_price), Decimal(flat_fee))


def graduated(*tiers: Tier) -> Graduated:
    return Graduated("api", "api_calls", tiers)


STANDARD = graduated(tier(1000, "0.02"), tier(10000, "0.015"), tier(None, "0.01"))


@pytest.mark.parametrize(
    ("quantity", "exact", "rounded", "terms"),
    [
        (0, "0", "0.00", ()),
        (1, "0.02", "0.02", ("1 x 0.02",)),
        (1000, "20", "20.00", ("1,000 x 0.02",)),
        (1001, "20.015", "20.02", ("1,000 x 0.02", "1 x 0.015")),
        (10000, "155", "155.00", ("1,000 x 0.02", "9,000 x 0.015")),
        (10001, "155.01", "155.01", ("1,000 x 0.02", "9,000 x 0.015", "1 x 0.01")),
        (12500, "180", "180.00", ("1,000 x 0.02", "9,000 x 0.015", "2,500 x 0.01")),
        (1_000_000, "10055", "10055.00", ("1,000 x 0.02", "9,000 x 0.015", "990,000 x 0.01")),
    ],
)
def test_graduated_standard_tiers(
    quantity: int, exact: str, rounded: str, terms: tuple[str, ...]
) -> None:
    priced = price_graduated(STANDARD, Decimal(quantity), USD).priced
    assert priced.amount == Decimal(exact)
    assert str(round_money(priced.amount, USD)) == rounded
    assert priced.terms == terms


def test_tier_breakdown_keeps_exact_unit_prices_and_sub_amounts() -> None:
    priced = price_graduated(STANDARD, Decimal(12500), USD).priced
    assert [t.to_dict() for t in priced.tiers] == [
        {"tier": 1, "from": "0", "up_to": "1000", "units": "1000", "unit_price": "0.02",
         "flat_fee": "0", "amount": "20"},
        {"tier": 2, "from": "1000", "up_to": "10000", "units": "9000", "unit_price": "0.015",
         "flat_fee": "0", "amount": "135"},
        {"tier": 3, "from": "10000", "units": "2500", "unit_price": "0.01",
         "flat_fee": "0", "amount": "25"},
    ]  # fmt: skip


FEES = graduated(tier(1000, "0.02"), tier(None, "0.01", "10"))


@pytest.mark.parametrize(
    ("quantity", "exact", "terms"),
    [
        (1000, "20", ("1,000 x 0.02",)),  # tier 2 receives nothing: no fee
        (1001, "30.01", ("1,000 x 0.02", "1 x 0.01", "10.00 (tier 2 flat fee)")),
        (1500, "35", ("1,000 x 0.02", "500 x 0.01", "10.00 (tier 2 flat fee)")),
    ],
)
def test_flat_fee_is_added_when_the_tier_receives_units(
    quantity: int, exact: str, terms: tuple[str, ...]
) -> None:
    priced = price_graduated(FEES, Decimal(quantity), USD).priced
    assert priced.amount == Decimal(exact)
    assert priced.terms == terms


def test_position_carries_over_and_each_fee_is_charged_once() -> None:
    first = price_graduated(FEES, Decimal(1500), USD)
    second = price_graduated(FEES, Decimal(500), USD, Decimal(1500), first.fees_charged)
    assert first.fees_charged == frozenset({0, 1})
    assert second.priced.amount == Decimal(5)  # 500 x 0.01, no second tier-2 fee
    assert second.priced.terms == ("500 x 0.01",)
    assert [t.units for t in second.priced.tiers] == [Decimal(500)]


@pytest.mark.parametrize(
    ("position", "units", "expected_units_per_tier"),
    [
        (0, 1000, [1000]),
        (999, 2, [1, 1]),
        (1000, 1, [1]),  # exactly on the boundary: tier 2 starts at 1,001
        (9000, 3500, [1000, 2500]),
        (500, 20000, [500, 9000, 10500]),
    ],
)
def test_units_fill_tiers_from_the_position(
    position: int, units: int, expected_units_per_tier: list[int]
) -> None:
    priced = price_graduated(STANDARD, Decimal(units), USD, Decimal(position)).priced
    assert [int(t.units) for t in priced.tiers] == expected_units_per_tier
    assert sum(t.units for t in priced.tiers) == units


def test_fractional_quantities() -> None:
    priced = price_graduated(STANDARD, Decimal("1000.5"), USD).priced
    assert priced.amount == Decimal("20.0075")
    assert priced.terms == ("1,000 x 0.02", "0.5 x 0.015")


def test_tier_ranges() -> None:
    assert tier_ranges(STANDARD.tiers) == [
        (Decimal(0), Decimal(1000)),
        (Decimal(1000), Decimal(10000)),
        (Decimal(10000), None),
    ]


def test_negative_units_are_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        price_graduated(STANDARD, Decimal(-1), USD)
