"""free_units on per_unit and package: the first N units of the period are free."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.pricing.rating_support import amount, rate

from meterline.domain.errors import MeterlineError
from meterline.pricing.charges import Package, PerUnit


def per_unit(price: str, free: int) -> PerUnit:
    return PerUnit("api", "calls", Decimal(price), Decimal(free))


def package(size: int, price: str, free: int) -> Package:
    return Package("sms", "messages", Decimal(size), Decimal(price), Decimal(free))


@pytest.mark.parametrize(
    ("charge", "quantity", "expected", "formula"),
    [
        pytest.param(
            per_unit("0.02", 1000), "1500", "10.00", "500 x 0.02 (1,000 free) = 10.00",
            id="per_unit 1,500 with 1,000 free at 0.02 = 10.00",
        ),
        pytest.param(
            per_unit("0.02", 1000), "800", "0.00", "0 x 0.02 (800 free) = 0.00",
            id="per_unit 800 within 1,000 free = 0.00",
        ),
        pytest.param(
            per_unit("0.02", 0), "1500", "30.00", "1,500 x 0.02 = 30.00",
            id="per_unit without free units 1,500 x 0.02 = 30.00",
        ),
        pytest.param(
            package(100, "5", 100), "201", "10.00",
            "ceil(101 / 100) x 5.00 (100 free) = 10.00",
            id="package 201 with 100 free in packs of 100 at 5 = 2 packs = 10.00",
        ),
        pytest.param(
            package(100, "5", 100), "100", "0.00", "ceil(0 / 100) x 5.00 (100 free) = 0.00",
            id="package 100 all free = 0.00",
        ),
    ],
)  # fmt: skip
def test_free_units_one_segment(
    charge: PerUnit | Package, quantity: str, expected: str, formula: str
) -> None:
    rated = rate(charge.code, (charge,), usage=((quantity, None),))
    assert amount(rated) == expected
    assert rated.explanation.formula == formula


def test_per_unit_free_units_carry_across_a_price_change_600_then_900_with_1000_free() -> None:
    """v1 0.02, v2 0.03, 1,000 free: v1 600 all free; v2 400 free + 500 x 0.03 = 15.00."""
    rated = rate(
        "api", (per_unit("0.02", 1000),), (per_unit("0.03", 1000),),
        usage=(("600", None), ("900", None)),
    )  # fmt: skip
    assert amount(rated) == "15.00"
    assert rated.explanation.formula == (
        "v1: 0 x 0.02 (600 free) + v2: 500 x 0.03 (400 free) = 15.00"
    )


def test_package_free_units_carry_across_a_price_change_60_then_150_with_100_free() -> None:
    """packs of 100, 100 free: v1 60 free (0 packs); v2 40 free, 110 billed = 2 packs x 6 = 12."""
    rated = rate(
        "sms", (package(100, "5", 100),), (package(100, "6", 100),),
        usage=(("60", None), ("150", None)),
    )  # fmt: skip
    assert amount(rated) == "12.00"


def test_free_units_refuse_a_negative_quantity() -> None:
    with pytest.raises(MeterlineError, match="negative quantity"):
        rate("api", (per_unit("0.02", 10),), usage=(("-5", None),))
