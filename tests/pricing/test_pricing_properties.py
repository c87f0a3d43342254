"""Property-based checks of the pricing models and price book resolution (hypothesis)."""

from __future__ import annotations

from decimal import Decimal
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from meterline.domain.money import Currency, Rounding, round_money
from meterline.domain.timestamps import US_PER_DAY
from meterline.pricing._exact import mul, total
from meterline.pricing.charges import Graduated, Package, PerUnit, Tier, UsageCharge, Volume
from meterline.pricing.graduated import price_graduated
from meterline.pricing.pricebook import PriceBook, Segment, VersionSpec
from meterline.pricing.rating import SegmentUsage, rate_additive
from meterline.pricing.volume import price_volume, select_tier

USD = Currency("USD")

prices = st.integers(0, 10**6).map(lambda n: Decimal(n).scaleb(-4))  # 0 .. 100.0000
quantities = st.integers(0, 10**9).map(lambda n: Decimal(n).scaleb(-3))  # 0 .. 1,000,000.000
whole_quantities = st.integers(0, 2_000_000).map(Decimal)


@st.composite
def tier_lists(draw: st.DrawFn) -> tuple[Tier, ...]:
    bounds = sorted(draw(st.sets(st.integers(1, 1_000_000), max_size=5)))
    ups: list[Decimal | None] = [Decimal(b) for b in bounds]
    ups.append(None)
    return tuple(Tier(up_to, draw(prices), draw(prices)) for up_to in ups)


@st.composite
def splits(draw: st.DrawFn, of: st.SearchStrategy[Decimal] = whole_quantities) -> list[Decimal]:
    """A quantity split into 1..6 non-negative parts."""
    return draw(st.lists(of, min_size=1, max_size=6))


def one_version_book(charge: UsageCharge) -> PriceBook:
    version = VersionSpec(label="v1", effective_from=0, charges=(charge,)).recorded(1)
    return PriceBook("b", USD, Rounding.HALF_UP, (version,))


def rate_split(charge: UsageCharge, parts: list[Decimal]) -> Decimal:
    """Rate `parts` as consecutive one-day segments under one unchanged version."""
    book = one_version_book(charge)
    version = book.versions[0]
    rows = [
        SegmentUsage(Segment(i * US_PER_DAY, (i + 1) * US_PER_DAY, version), q)
        for i, q in enumerate(parts)
    ]
    return rate_additive(book, charge.code, rows).exact_amount


@given(tier_lists(), quantities, quantities)
def test_graduated_is_non_decreasing_in_quantity(
    tiers: tuple[Tier, ...], a: Decimal, b: Decimal
) -> None:
    charge = Graduated("c", "m", tiers)
    low, high = sorted([a, b])
    assert (
        price_graduated(charge, low, USD).priced.amount
        <= price_graduated(charge, high, USD).priced.amount
    )


@given(tier_lists(), quantities)
def test_graduated_is_the_sum_of_its_tier_sub_amounts(
    tiers: tuple[Tier, ...], quantity: Decimal
) -> None:
    priced = price_graduated(Graduated("c", "m", tiers), quantity, USD).priced
    assert priced.amount == total(t.amount for t in priced.tiers)
    assert total(t.units for t in priced.tiers) == quantity
    for line in priced.tiers:
        tier = tiers[line.tier - 1]
        assert line.amount == mul(line.units, tier.unit_price) + tier.flat_fee
        assert line.units > 0


@given(tier_lists(), quantities)
def test_volume_is_quantity_times_the_selected_tier_price(
    tiers: tuple[Tier, ...], quantity: Decimal
) -> None:
    priced = price_volume(Volume("c", "m", tiers), quantity, quantity, USD)
    index = select_tier(tiers, quantity)
    if quantity == 0:  # zero usage falls in the first tier: its flat fee, nothing per unit
        assert index == 0 and priced.amount == tiers[0].flat_fee
        return
    tier = tiers[index]
    assert priced.amount == mul(quantity, tier.unit_price) + tier.flat_fee
    lower = tiers[index - 1].up_to if index else Decimal(0)
    assert lower is not None and lower < quantity
    assert tier.up_to is None or quantity <= tier.up_to


@given(tier_lists(), splits(quantities))
def test_graduated_split_under_one_version_equals_whole(
    tiers: tuple[Tier, ...], parts: list[Decimal]
) -> None:
    charge = Graduated("c", "m", tiers)
    assert rate_split(charge, parts) == rate_split(charge, [total(parts)])


@given(tier_lists(), splits(quantities))
def test_volume_split_under_one_version_equals_whole(
    tiers: tuple[Tier, ...], parts: list[Decimal]
) -> None:
    charge = Volume("c", "m", tiers)
    assert rate_split(charge, parts) == rate_split(charge, [total(parts)])


@given(prices, splits(quantities))
def test_per_unit_split_under_one_version_equals_whole(
    price: Decimal, parts: list[Decimal]
) -> None:
    charge = PerUnit("c", "m", price)
    assert rate_split(charge, parts) == rate_split(charge, [total(parts)])


@given(st.integers(1, 5000).map(Decimal), prices, splits())
def test_package_is_per_segment_and_never_cheaper_split(
    size: Decimal, price: Decimal, parts: list[Decimal]
) -> None:
    """Package is applied per segment by design: a split period pays each started
    package, so it equals the sum of the parts rated alone and is at least the
    whole rated unsplit; the two agree when nothing is split."""
    charge = Package("c", "m", size, price)
    split = rate_split(charge, parts)
    assert split == total(rate_split(charge, [q]) for q in parts)
    assert split >= rate_split(charge, [total(parts)])
    if len(parts) == 1:
        assert split == rate_split(charge, parts)


@given(tier_lists(), quantities, st.sampled_from(list(Rounding)))
def test_lines_are_rounded_once_within_half_a_minor_unit(
    tiers: tuple[Tier, ...], quantity: Decimal, rounding: Rounding
) -> None:
    version = VersionSpec(
        label="v1", effective_from=0, charges=(Graduated("c", "m", tiers),)
    ).recorded(1)
    book = PriceBook("b", USD, rounding, (version,))
    rated = rate_additive(book, "c", [SegmentUsage(Segment(0, US_PER_DAY, version), quantity)])
    assert rated.amount == round_money(rated.exact_amount, USD, rounding)
    assert abs(rated.amount - rated.exact_amount) <= Decimal("0.005")
    assert rated.amount.as_tuple().exponent == -2


@st.composite
def books(draw: st.DrawFn) -> PriceBook:
    """Versions at random effective dates and seqs, some corrections of earlier dates."""
    count = draw(st.integers(1, 6))
    starts = draw(st.lists(st.integers(0, 60), min_size=count, max_size=count))
    seqs = draw(st.permutations(range(1, count + 1)))
    versions = tuple(
        VersionSpec(
            label=f"v{i}",
            effective_from=start * US_PER_DAY,
            charges=(PerUnit("c", "m", Decimal(i)),),
        ).recorded(seq)
        for i, (start, seq) in enumerate(zip(starts, seqs, strict=True))
    )
    return PriceBook("b", USD, Rounding.HALF_UP, versions)


@given(books(), st.integers(0, 7), st.integers(0, 90), st.integers(1, 90))
def test_segments_tile_the_interval_with_the_version_in_effect(
    book: PriceBook, known_at: int, start_day: int, days: int
) -> None:
    known = book.known_at(known_at)
    start, end = start_day * US_PER_DAY, (start_day + days) * US_PER_DAY
    if not known or start < min(v.effective_from for v in known):
        return  # NO_PRICE_FOR_DATE, covered by example tests
    pieces = book.segments(start, end, known_at)
    assert pieces[0].start == start and pieces[-1].end == end
    for before, after in pairwise(pieces):
        assert before.end == after.start
        assert before.version != after.version
    for piece in pieces:
        assert piece.version == book.version_at(piece.start, known_at)
        assert piece.version == book.version_at(piece.end - 1, known_at)
