"""conversion: meter value x multiply_by / divide_by, rounded before pricing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.pricing.rating_support import amount, rate

from meterline.pricing.charges import Conversion, ConversionRounding, Graduated, PerUnit, Tier
from meterline.pricing.conversion import convert, convert_segments

GB = Conversion(divide_by=Decimal(1_000_000_000), rounding=ConversionRounding.UP)
HOURS_2DP = Conversion(divide_by=Decimal(3600), rounding=ConversionRounding.HALF_UP, precision=2)


@pytest.mark.parametrize(
    ("conversion", "value", "expected"),
    [
        pytest.param(GB, "2500000001", "3", id="2,500,000,001 bytes up to whole GB = 3"),
        pytest.param(GB, "3000000000", "3", id="3,000,000,000 bytes = exactly 3 GB"),
        pytest.param(GB, "0", "0", id="0 bytes = 0 GB"),
        pytest.param(
            Conversion(divide_by=Decimal(1_000_000_000), rounding=ConversionRounding.DOWN),
            "2999999999", "2", id="2,999,999,999 bytes down = 2 GB",
        ),
        pytest.param(HOURS_2DP, "5400", "1.5", id="5,400 seconds = 1.50 hours"),
        pytest.param(HOURS_2DP, "100", "0.03", id="100 seconds = 0.0277... half up = 0.03 hours"),
        pytest.param(
            Conversion(multiply_by=Decimal(8)), "125", "1000", id="125 bytes x 8 = 1,000 bits",
        ),
    ],
)  # fmt: skip
def test_convert(conversion: Conversion, value: str, expected: str) -> None:
    assert convert(Decimal(value), conversion) == Decimal(expected)


def test_per_unit_storage_in_gb_2_5_billion_bytes_at_0_10_per_gb_is_0_30() -> None:
    charge = PerUnit("storage", "bytes", Decimal("0.10"), conversion=GB)
    rated = rate("storage", (charge,), usage=(("2500000001", None),))
    assert amount(rated) == "0.30"
    assert rated.explanation.formula == "3 x 0.10 = 0.30"
    assert rated.explanation.notes == (
        "2,500,000,001 metered / 1,000,000,000, rounded up = 3 billed",
    )
    segment = rated.explanation.to_dict()["segments"][0]
    assert segment["pricing"]["metered_quantity"] == "2500000001"
    assert segment["pricing"]["converted_quantity"] == "3"


def test_rounding_up_across_a_price_change_never_rounds_twice_1_2_gb_plus_1_2_gb_is_3_gb() -> None:
    """1.2 GB then 1.2 GB: the running total converts 2 then 3, so v1 bills 2 and v2 1 (not 2+2)."""
    assert convert_segments([Decimal("1.2e9"), Decimal("1.2e9")], GB) == [2, 1]
    v1 = PerUnit("storage", "bytes", Decimal("0.10"), conversion=GB)
    v2 = PerUnit("storage", "bytes", Decimal("0.20"), conversion=GB)
    rated = rate("storage", (v1,), (v2,), usage=(("1200000000", None), ("1200000000", None)))
    assert amount(rated) == "0.40"


def test_graduated_tiers_apply_to_the_converted_quantity_5400_s_is_1_5_h() -> None:
    charge = Graduated(
        "compute", "seconds",
        (Tier(Decimal(1), Decimal("2")), Tier(None, Decimal("1"))),
        conversion=HOURS_2DP,
    )  # fmt: skip
    rated = rate("compute", (charge,), usage=(("5400", None),))
    assert amount(rated) == "2.50"
    assert rated.quantity == Decimal("1.5")
