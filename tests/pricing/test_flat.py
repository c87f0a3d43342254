"""flat: a fee per billing period, prorated by active time unless told not to (DESIGN §5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.domain.decimals import fmt
from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import US_PER_DAY, US_PER_HOUR, parse_rfc3339
from meterline.pricing.charges import Flat
from meterline.pricing.explanation import Basis
from meterline.pricing.flat import price_flat
from meterline.pricing.pricebook import PriceBook, Segment, VersionSpec
from meterline.pricing.rating import rate_flat

USD, JPY = Currency("USD"), Currency("JPY")
JAN, FEB = parse_rfc3339("2024-01-01T00:00:00Z"), parse_rfc3339("2024-02-01T00:00:00Z")


def T(text: str) -> int:
    return parse_rfc3339(text)


def book(*charges_by_date: tuple[str, Flat], currency: Currency = USD) -> PriceBook:
    versions = tuple(
        VersionSpec(label=f"v{i + 1}", effective_from=T(at), charges=(charge,)).recorded(i + 1)
        for i, (at, charge) in enumerate(charges_by_date)
    )
    return PriceBook("standard", currency, Rounding.HALF_UP, versions)


def active(b: PriceBook, *spans: tuple[str, str]) -> list[Segment]:
    return [s for start, end in spans for s in b.segments(T(start), T(end), 100)]


PLATFORM = Flat("platform", Decimal("49.00"))


@pytest.mark.parametrize(
    ("active_us", "term", "exact_prefix"),
    [
        (16 * US_PER_DAY, "49.00 x 16 days / 31 days", "25.2903225806"),
        (31 * US_PER_DAY, "49.00", "49"),
        (12 * US_PER_HOUR, "49.00 x 12 hours / 744 hours", "0.7903225806"),
        (1, "49.00 x 1 microsecond / 2,678,400,000,000 microseconds", "0.0000000000182945"),
    ],
)
def test_price_flat_prorates_by_exact_time(active_us: int, term: str, exact_prefix: str) -> None:
    priced = price_flat(PLATFORM, active_us, 31 * US_PER_DAY, USD)
    assert priced.terms == (term,)
    assert fmt(priced.amount).startswith(exact_prefix)


def test_flat_49_over_16_of_31_days_is_25_29() -> None:
    b = book(("2024-01-01T00:00:00Z", PLATFORM))
    rated = rate_flat(
        b, "platform", JAN, FEB, active(b, ("2024-01-16T00:00:00Z", "2024-02-01T00:00:00Z"))
    )
    assert rated.amount == Decimal("25.29")
    assert rated.explanation.formula == "49.00 x 16 days / 31 days = 25.29"
    assert rated.explanation.basis is Basis.PRORATED
    assert rated.quantity is None and rated.meter is None


def test_full_period_is_the_full_amount() -> None:
    b = book(("2024-01-01T00:00:00Z", PLATFORM))
    rated = rate_flat(
        b, "platform", JAN, FEB, active(b, ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"))
    )
    assert rated.amount == Decimal("49.00")
    assert rated.explanation.formula == "49.00 = 49.00"
    assert rated.explanation.segments[0].priced.note == "full period"


def test_two_active_spans_add_up() -> None:
    b = book(("2024-01-01T00:00:00Z", PLATFORM))
    segments = active(
        b,
        ("2024-01-01T00:00:00Z", "2024-01-05T00:00:00Z"),
        ("2024-01-20T00:00:00Z", "2024-02-01T00:00:00Z"),
    )
    rated = rate_flat(b, "platform", JAN, FEB, segments)
    assert rated.amount == Decimal("25.29")  # 4 + 12 = 16 days, rounded once
    assert rated.explanation.formula == (
        "v1: 49.00 x 4 days / 31 days + v1: 49.00 x 12 days / 31 days = 25.29"
    )


def test_price_change_prorates_each_version() -> None:
    b = book(
        ("2024-01-01T00:00:00Z", PLATFORM), ("2024-01-15T00:00:00Z", Flat("platform", Decimal(99)))
    )
    rated = rate_flat(
        b, "platform", JAN, FEB, active(b, ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z"))
    )
    # 49 x 14/31 + 99 x 17/31 = 2369/31 = 76.419...
    assert rated.amount == Decimal("76.42")
    assert rated.explanation.formula == (
        "v1: 49.00 x 14 days / 31 days + v2: 99.00 x 17 days / 31 days = 76.42"
    )
    assert [v.label for v in rated.explanation.versions] == ["v1", "v2"]


def test_not_prorated_charges_the_full_amount_of_the_version_at_the_end() -> None:
    b = book(
        ("2024-01-01T00:00:00Z", Flat("platform", Decimal(49), prorate=False)),
        ("2024-01-15T00:00:00Z", Flat("platform", Decimal(99), prorate=False)),
    )
    rated = rate_flat(
        b, "platform", JAN, FEB, active(b, ("2024-01-10T00:00:00Z", "2024-01-20T00:00:00Z"))
    )
    assert rated.amount == Decimal("99.00")
    assert rated.explanation.basis is Basis.END_OF_PERIOD
    assert rated.explanation.formula == "99.00 = 99.00"
    line = rated.explanation.segments[0]
    assert (line.start, line.end, line.version.label) == (
        T("2024-01-10T00:00:00Z"),
        T("2024-01-20T00:00:00Z"),
        "v2",
    )


def test_subscription_ending_before_a_price_change_never_sees_it() -> None:
    b = book(
        ("2024-01-01T00:00:00Z", Flat("platform", Decimal(49), prorate=False)),
        ("2024-01-25T00:00:00Z", Flat("platform", Decimal(99), prorate=False)),
    )
    rated = rate_flat(
        b, "platform", JAN, FEB, active(b, ("2024-01-01T00:00:00Z", "2024-01-20T00:00:00Z"))
    )
    assert rated.amount == Decimal("49.00")


def test_jpy_proration_rounds_to_whole_yen() -> None:
    b = book(("2024-01-01T00:00:00Z", Flat("platform", Decimal(1000))), currency=JPY)
    rated = rate_flat(
        b, "platform", JAN, FEB, active(b, ("2024-01-16T00:00:00Z", "2024-02-01T00:00:00Z"))
    )
    assert rated.amount == Decimal("516")  # 1000 x 16/31 = 516.13
    assert rated.explanation.formula == "1,000 x 16 days / 31 days = 516"


def test_segments_outside_the_period_are_refused() -> None:
    b = book(("2024-01-01T00:00:00Z", PLATFORM))
    with pytest.raises(ValueError, match="within the billing period"):
        rate_flat(
            b,
            "platform",
            JAN,
            T("2024-01-20T00:00:00Z"),
            active(b, ("2024-01-01T00:00:00Z", "2024-02-01T00:00:00Z")),
        )
