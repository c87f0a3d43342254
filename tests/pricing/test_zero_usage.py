"""The zero-usage convention: a quantity of 0 falls in the first tier (OpenMeter, Lago).

graduated and volume charge the first tier's flat_fee at zero usage; units x price stay 0.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.pricing.rating_support import amount, rate

from meterline.pricing.charges import Graduated, Tier, Volume


def tiers(fee1: str, fee2: str) -> tuple[Tier, ...]:
    return (
        Tier(Decimal(1000), Decimal("0.10"), Decimal(fee1)),
        Tier(None, Decimal("0.05"), Decimal(fee2)),
    )


@pytest.mark.parametrize(
    ("charge", "expected", "formula"),
    [
        pytest.param(
            Graduated("g", "m", tiers("10", "20")), "10.00", "10.00 (tier 1 flat fee) = 10.00",
            id="graduated at 0 units pays tier 1's flat fee 10.00",
        ),
        pytest.param(
            Volume("v", "m", tiers("10", "20")), "10.00", "10.00 (tier 1 flat fee) = 10.00",
            id="volume at 0 units pays tier 1's flat fee 10.00",
        ),
        pytest.param(
            Graduated("g", "m", tiers("0", "20")), "0.00", "0 units = 0.00",
            id="graduated at 0 units, no tier 1 fee = 0.00",
        ),
    ],
)  # fmt: skip
def test_zero_usage_falls_in_the_first_tier(
    charge: Graduated | Volume, expected: str, formula: str
) -> None:
    rated = rate(charge.code, (charge,), usage=(("0", None),))
    assert amount(rated) == expected
    assert rated.explanation.formula == formula


def test_zero_usage_across_a_price_change_charges_the_fee_once_from_the_end_version() -> None:
    """v1 tier 1 fee 10, v2 tier 1 fee 12, no usage in either: 12.00 once (end of period)."""
    v1, v2 = Graduated("g", "m", tiers("10", "20")), Graduated("g", "m", tiers("12", "20"))
    rated = rate("g", (v1,), (v2,), usage=(("0", None), ("0", None)))
    assert amount(rated) == "12.00"


def test_usage_in_a_later_segment_is_not_zero_usage_0_then_500_pays_one_tier_1_fee() -> None:
    """v1 0 units, v2 500 units: tier 1 receives units in v2, so its fee (v2's 12) once + 50."""
    v1, v2 = Graduated("g", "m", tiers("10", "20")), Graduated("g", "m", tiers("12", "20"))
    rated = rate("g", (v1,), (v2,), usage=(("0", None), ("500", None)))
    assert amount(rated) == "62.00"
