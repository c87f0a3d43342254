"""maximum_spend: a cap on the period's usage lines, shown as a negative adjustment."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.pricing.rating_support import FEB, JAN, USD

from meterline.domain.money import Rounding
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.charges import PerUnit
from meterline.pricing.explanation import Basis
from meterline.pricing.maximum import MAXIMUM_SPEND_CODE
from meterline.pricing.pricebook import PriceBook, Segment, VersionSpec
from meterline.pricing.rating import rate_maximum_spend, rate_minimum_spend

API = PerUnit("api", "calls", Decimal("0.02"))


def capped(
    maximum: str | None, prorate: bool = True, minimum: str | None = None, start: str = "01"
) -> tuple[PriceBook, tuple[Segment, ...]]:
    version = VersionSpec(
        label="v1",
        effective_from=JAN,
        charges=(API,),
        minimum_spend=None if minimum is None else Decimal(minimum),
        maximum_spend=None if maximum is None else Decimal(maximum),
        maximum_prorate=prorate,
    ).recorded(1)
    book = PriceBook("b", USD, Rounding.HALF_UP, (version,))
    return book, book.segments(parse_rfc3339(f"2024-01-{start}T00:00:00Z"), FEB, 10)


@pytest.mark.parametrize(
    ("maximum", "prorate", "start", "usage", "expected", "formula"),
    [
        pytest.param(
            "500.00", True, "01", ["420.00", "180.00"], "-100.00",
            "500.00 maximum spend - 600.00 usage = -100.00",
            id="usage 600.00 capped at 500.00 = -100.00 adjustment",
        ),
        pytest.param(
            "500.00", True, "01", ["500.00"], None, "", id="usage exactly at the cap: no line",
        ),
        pytest.param(
            "500.00", True, "01", ["120.00"], None, "", id="usage below the cap: no line",
        ),
        pytest.param(
            "500.00", True, "16", ["400.00"], "-141.94",
            "500.00 maximum spend x 16 days / 31 days - 400.00 usage = -141.94",
            id="cap 500.00 over 16 of 31 days = 258.0645... so 400.00 usage = -141.94",
        ),
        pytest.param(
            "500.00", False, "16", ["600.00"], "-100.00",
            "500.00 maximum spend - 600.00 usage = -100.00",
            id="prorate false: the whole 500.00 cap on a partial period = -100.00",
        ),
    ],
)  # fmt: skip
def test_maximum_spend_cap(
    maximum: str, prorate: bool, start: str, usage: list[str], expected: str | None, formula: str
) -> None:
    book, segments = capped(maximum, prorate, start=start)
    rated = rate_maximum_spend(book, segments, [Decimal(u) for u in usage], (JAN, FEB))
    if expected is None:
        assert rated is None
        return
    assert rated is not None
    assert rated.charge == MAXIMUM_SPEND_CODE
    assert str(rated.amount) == expected
    assert rated.explanation.formula == formula
    assert rated.explanation.basis is Basis.END_OF_PERIOD


def test_min_and_max_on_one_version_only_one_applies_100_to_500() -> None:
    book, segments = capped("500.00", minimum="100.00")
    low, high = [Decimal("40.00")], [Decimal("700.00")]
    assert rate_maximum_spend(book, segments, low, (JAN, FEB)) is None
    assert rate_minimum_spend(book, segments, high, (JAN, FEB)) is None
    assert str(rate_minimum_spend(book, segments, low, (JAN, FEB)).amount) == "60.00"  # type: ignore[union-attr]
    assert str(rate_maximum_spend(book, segments, high, (JAN, FEB)).amount) == "-200.00"  # type: ignore[union-attr]


def test_a_minimum_above_the_maximum_is_refused() -> None:
    with pytest.raises(ValueError, match="exceeds maximum_spend"):
        capped("100.00", minimum="200.00")


def test_a_small_prorated_cap_far_below_usage_stays_exact_to_the_cent() -> None:
    """5.00 over 1 of 31 days = 0.16129... (no finite decimal) and usage 98,765.43:
    the cap line is 0.16129... - 98,765.43 = -98,765.27 (the difference needs more than
    60 digits exactly; it is computed to 60 and rounds the same)."""
    book, _ = capped("5.00")
    segments = book.segments(parse_rfc3339("2024-01-31T00:00:00Z"), FEB, 10)
    rated = rate_maximum_spend(book, segments, [Decimal("98765.43")], (JAN, FEB))
    assert rated is not None and str(rated.amount) == "-98765.27"
