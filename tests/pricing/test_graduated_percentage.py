"""graduated_percentage: graduated tiers over the meter's sum, each tier a rate."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.pricing.rating_support import amount, rate

from meterline.pricing.charges import GraduatedPercentage, RateTier


def gp(*tiers: tuple[int | None, str, str]) -> GraduatedPercentage:
    return GraduatedPercentage(
        "share",
        "revenue",
        tuple(
            RateTier(None if up is None else Decimal(up), Decimal(r), Decimal(fee))
            for up, r, fee in tiers
        ),
    )


STANDARD = gp((10000, "0.03", "0"), (100000, "0.02", "0"), (None, "0.01", "0"))
WITH_FEES = gp((10000, "0.03", "5"), (100000, "0.02", "10"), (None, "0.01", "0"))


@pytest.mark.parametrize(
    ("charge", "total", "expected", "formula"),
    [
        pytest.param(
            STANDARD, "150000", "2600.00", "3% x 10,000 + 2% x 90,000 + 1% x 50,000 = 2,600.00",
            id="150,000.00 across three tiers = 300 + 1,800 + 500 = 2,600.00",
        ),
        pytest.param(
            STANDARD, "10000", "300.00", "3% x 10,000 = 300.00",
            id="10,000.00 exactly on tier 1's up_to = 300.00",
        ),
        pytest.param(
            STANDARD, "10000.01", "300.00", "3% x 10,000 + 2% x 0.01 = 300.00",
            id="10,000.01 = 300.0002, rounded = 300.00",
        ),
        pytest.param(
            WITH_FEES, "20000", "515.00",
            "3% x 10,000 + 5.00 (tier 1 flat fee) + 2% x 10,000 + 10.00 (tier 2 flat fee) = 515.00",
            id="20,000.00 with tier fees 5 and 10 = 300 + 5 + 200 + 10 = 515.00",
        ),
        pytest.param(
            WITH_FEES, "0", "5.00", "5.00 (tier 1 flat fee) = 5.00",
            id="zero sum falls in tier 1: its flat fee 5.00",
        ),
        pytest.param(STANDARD, "0", "0.00", "0 units = 0.00", id="zero sum, no fees = 0.00"),
    ],
)  # fmt: skip
def test_graduated_percentage_one_segment(
    charge: GraduatedPercentage, total: str, expected: str, formula: str
) -> None:
    rated = rate("share", (charge,), usage=((total, None),))
    assert amount(rated) == expected
    assert rated.explanation.formula == formula


def test_tier_position_carries_across_a_price_change_8000_then_4000() -> None:
    """v1 3%/2%/1%, v2 4%/3%/1%: v1 8,000 in tier 1 = 240; v2 2,000 in tier 1 at 4% = 80
    and 2,000 in tier 2 at 3% = 60; total 380.00."""
    v2 = gp((10000, "0.04", "0"), (100000, "0.03", "0"), (None, "0.01", "0"))
    rated = rate("share", (STANDARD,), (v2,), usage=(("8000", None), ("4000", None)))
    assert amount(rated) == "380.00"
    assert rated.explanation.formula == "v1: 3% x 8,000 + v2: 4% x 2,000 + 3% x 2,000 = 380.00"


def test_rates_above_one_are_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        gp((None, "1.01", "0"))
