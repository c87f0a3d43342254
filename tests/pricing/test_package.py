"""package: ceil(quantity / package_size) x package_price, per segment (DESIGN §5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.domain.money import Currency, Rounding, round_money
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.charges import Package
from meterline.pricing.package import price_package
from meterline.pricing.pricebook import PriceBook, VersionSpec
from meterline.pricing.rating import SegmentUsage, rate_additive

USD = Currency("USD")
TOKENS = Package("tok", "tokens", Decimal(1000), Decimal("0.50"))


@pytest.mark.parametrize(
    ("quantity", "packages", "exact", "rounded", "term"),
    [
        ("0", "0", "0", "0.00", "ceil(0 / 1,000) x 0.50"),
        ("1", "1", "0.5", "0.50", "ceil(1 / 1,000) x 0.50"),
        ("1000", "1", "0.5", "0.50", "ceil(1,000 / 1,000) x 0.50"),
        ("1001", "2", "1", "1.00", "ceil(1,001 / 1,000) x 0.50"),
        ("2500000", "2500", "1250", "1250.00", "ceil(2,500,000 / 1,000) x 0.50"),
        ("999.5", "1", "0.5", "0.50", "ceil(999.5 / 1,000) x 0.50"),
    ],
)
def test_package(quantity: str, packages: str, exact: str, rounded: str, term: str) -> None:
    priced = price_package(TOKENS, Decimal(quantity), USD)
    assert priced.amount == Decimal(exact)
    assert str(round_money(priced.amount, USD)) == rounded
    assert priced.terms == (term,)
    assert dict(priced.pricing)["packages"] == packages


def test_fractional_package_size() -> None:
    gigabytes = Package("gb", "storage", Decimal("0.5"), Decimal("0.25"))
    priced = price_package(gigabytes, Decimal("1.2"), USD)
    assert dict(priced.pricing)["packages"] == "3"
    assert priced.amount == Decimal("0.75")


@pytest.mark.parametrize("size", ["0", "-1000"])
def test_package_size_must_be_positive(size: str) -> None:
    with pytest.raises(ValueError, match="package_size must be positive"):
        Package("tok", "tokens", Decimal(size), Decimal("0.50"))


def T(text: str) -> int:
    return parse_rfc3339(text)


@pytest.mark.parametrize(
    ("before", "after", "exact", "formula"),
    [
        (1001, 0, "1", "v1: ceil(1,001 / 1,000) x 0.50 + v2: ceil(0 / 1,000) x 0.50 = 1.00"),
        # per segment by design: 500 + 500 starts a package in each version
        (500, 500, "1", "v1: ceil(500 / 1,000) x 0.50 + v2: ceil(500 / 1,000) x 0.50 = 1.00"),
    ],
)
def test_package_is_applied_per_segment(before: int, after: int, exact: str, formula: str) -> None:
    v1 = VersionSpec(label="v1", effective_from=T("2024-01-01T00:00:00Z"), charges=(TOKENS,))
    v2 = VersionSpec(label="v2", effective_from=T("2024-01-15T00:00:00Z"), charges=(TOKENS,))
    book = PriceBook("standard", USD, Rounding.HALF_UP, (v1.recorded(1), v2.recorded(2)))
    first, second = book.segments(T("2024-01-01T00:00:00Z"), T("2024-02-01T00:00:00Z"), 2)
    rated = rate_additive(
        book, "tok", [SegmentUsage(first, Decimal(before)), SegmentUsage(second, Decimal(after))]
    )
    assert rated.exact_amount == Decimal(exact)
    assert rated.explanation.formula == formula
