"""dynamic: each event carries its own price; amount = sum of prices x multiplier."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.pricing.rating_support import amount, rate

from meterline.pricing.charges import Dynamic


@pytest.mark.parametrize(
    ("multiplier", "total", "expected", "formula"),
    [
        pytest.param(
            "1", "3.45", "3.45", "3.45 (sum of event prices) = 3.45",
            id="events priced 0.70 + 0.55 + 2.20 = 3.45",
        ),
        pytest.param(
            "1.2", "3.45", "4.14", "3.45 (sum of event prices) x 1.2 = 4.14",
            id="3.45 x multiplier 1.2 = 4.14",
        ),
        pytest.param(
            "1", "0.3333", "0.33", "0.3333 (sum of event prices) = 0.33",
            id="sub-cent event prices sum exactly, rounded once: 0.3333 = 0.33",
        ),
        pytest.param(
            "1", "-1.50", "-1.50", "-1.5 (sum of event prices) = -1.50",
            id="a refund event lowers the sum: -1.50",
        ),
        pytest.param("2", "0", "0.00", "0 (sum of event prices) x 2 = 0.00", id="no events = 0"),
    ],
)  # fmt: skip
def test_dynamic_one_segment(multiplier: str, total: str, expected: str, formula: str) -> None:
    charge = Dynamic("gpu", "gpu_cost", Decimal(multiplier))
    rated = rate("gpu", (charge,), usage=((total, None),))
    assert amount(rated) == expected
    assert rated.explanation.formula == formula


def test_each_segment_uses_its_versions_multiplier_10_x_1_plus_10_x_2_is_30() -> None:
    v1, v2 = Dynamic("gpu", "gpu_cost"), Dynamic("gpu", "gpu_cost", Decimal(2))
    rated = rate("gpu", (v1,), (v2,), usage=(("10", None), ("10", None)))
    assert amount(rated) == "30.00"
    assert rated.explanation.formula == (
        "v1: 10 (sum of event prices) + v2: 10 (sum of event prices) x 2 = 30.00"
    )
