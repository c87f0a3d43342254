"""volume: the tier holding the whole period quantity prices every unit (DESIGN §5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.domain.money import Currency, Rounding, round_money
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.charges import Tier, Volume
from meterline.pricing.pricebook import PriceBook, VersionSpec
from meterline.pricing.rating import SegmentUsage, rate_additive
from meterline.pricing.volume import price_volume, select_tier

USD = Currency("USD")


def tier(up_to: int | None, unit_price: str, flat_fee: str = "0") -> Tier:
    return Tier(None if up_to is None else Decimal(up_to), Decimal(unit_price), Decimal(flat_fee))


def volume(*tiers: Tier) -> Volume:
    return Volume("storage", "gb", tiers)


STANDARD = volume(tier(1000, "0.10"), tier(10000, "0.08"), tier(None, "0.05"))
WITH_FEES = volume(tier(1000, "0.10", "1"), tier(10000, "0.08", "5"), tier(None, "0.05", "25"))


@pytest.mark.parametrize(
    ("quantity", "selected", "exact", "rounded", "terms"),
    [
        (0, 0, "0", "0.00", ()),
        (1, 0, "0.1", "0.10", ("1 x 0.10",)),
        (1000, 0, "100", "100.00", ("1,000 x 0.10",)),  # on up_to: still tier 1
        (1001, 1, "80.08", "80.08", ("1,001 x 0.08",)),
        (5000, 1, "400", "400.00", ("5,000 x 0.08",)),
        (10000, 1, "800", "800.00", ("10,000 x 0.08",)),
        (10001, 2, "500.05", "500.05", ("10,001 x 0.05",)),
    ],
)
def test_volume_standard_tiers(
    quantity: int, selected: int | None, exact: str, rounded: str, terms: tuple[str, ...]
) -> None:
    q = Decimal(quantity)
    priced = price_volume(STANDARD, q, q, USD)
    assert select_tier(STANDARD.tiers, q) == selected
    assert priced.amount == Decimal(exact)
    assert str(round_money(priced.amount, USD)) == rounded
    assert priced.terms == terms


@pytest.mark.parametrize(
    ("quantity", "exact", "terms"),
    [
        (0, "1", ("1.00 (tier 1 flat fee)",)),  # 0 units fall in tier 1: its flat fee
        (1000, "101", ("1,000 x 0.10", "1.00 (tier 1 flat fee)")),
        (5000, "405", ("5,000 x 0.08", "5.00 (tier 2 flat fee)")),
    ],
)
def test_volume_adds_the_selected_tiers_flat_fee_once(
    quantity: int, exact: str, terms: tuple[str, ...]
) -> None:
    q = Decimal(quantity)
    priced = price_volume(WITH_FEES, q, q, USD)
    assert priced.amount == Decimal(exact)
    assert priced.terms == terms


def test_explanation_names_the_selected_tier() -> None:
    priced = price_volume(STANDARD, Decimal(5000), Decimal(5000), USD)
    assert [t.to_dict() for t in priced.tiers] == [
        {"tier": 2, "from": "1000", "up_to": "10000", "units": "5000", "unit_price": "0.08",
         "flat_fee": "0", "amount": "400"}
    ]  # fmt: skip
    assert dict(priced.pricing) == {"period_quantity": "5000", "selected_tier": "2"}
    assert priced.note == "tier 2 holds the period quantity of 5,000"


def T(text: str) -> int:
    return parse_rfc3339(text)


@pytest.mark.parametrize(
    ("before", "after", "exact", "formula"),
    [
        # period total 5,000 selects tier 2 in each version; fee from v2 (end of period)
        (
            2000,
            3000,
            "435",
            "v1: 2,000 x 0.08 + v2: 3,000 x 0.09 + 5.00 (tier 2 flat fee) = 435.00",
        ),
        # each segment alone would be tier 1; the period total 1,200 makes it tier 2
        (600, 600, "107", "v1: 600 x 0.08 + v2: 600 x 0.09 + 5.00 (tier 2 flat fee) = 107.00"),
        (0, 0, "0", "v1: 0 units + v2: 0 units = 0.00"),
    ],
)
def test_volume_across_a_price_change_selects_by_the_period_total(
    before: int, after: int, exact: str, formula: str
) -> None:
    v1 = VersionSpec(
        label="v1",
        effective_from=T("2024-01-01T00:00:00Z"),
        charges=(volume(tier(1000, "0.10"), tier(10000, "0.08", "2"), tier(None, "0.05")),),
    )
    v2 = VersionSpec(
        label="v2",
        effective_from=T("2024-01-15T00:00:00Z"),
        charges=(volume(tier(1000, "0.12"), tier(10000, "0.09", "5"), tier(None, "0.06")),),
    )
    book = PriceBook("standard", USD, Rounding.HALF_UP, (v1.recorded(1), v2.recorded(2)))
    first, second = book.segments(T("2024-01-01T00:00:00Z"), T("2024-02-01T00:00:00Z"), 2)
    rated = rate_additive(
        book,
        "storage",
        [SegmentUsage(first, Decimal(before)), SegmentUsage(second, Decimal(after))],
    )
    assert rated.exact_amount == Decimal(exact)
    assert rated.explanation.formula == formula
    assert rated.quantity == before + after


def test_a_period_total_below_units_is_refused() -> None:
    with pytest.raises(ValueError, match="units <= period_total"):
        price_volume(STANDARD, Decimal(10), Decimal(5), USD)
