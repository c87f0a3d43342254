"""Rating one charge over a billing period: segments, rounding once, explanation (DESIGN §5-§7)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from meterline.domain.canonical import dumps
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.charges import Charge, Flat, Graduated, PerUnit, Tier
from meterline.pricing.explanation import Basis
from meterline.pricing.pricebook import PriceBook, Segment, VersionSpec
from meterline.pricing.rating import (
    SegmentUsage,
    rate_additive,
    rate_flat,
    rate_non_additive,
)

USD = Currency("USD")
JAN, MID, FEB = (
    parse_rfc3339("2024-01-01T00:00:00Z"),
    parse_rfc3339("2024-01-15T00:00:00Z"),
    parse_rfc3339("2024-02-01T00:00:00Z"),
)


def tiers(*spec: tuple[int | None, str, str]) -> tuple[Tier, ...]:
    return tuple(
        Tier(None if up_to is None else Decimal(up_to), Decimal(price), Decimal(fee))
        for up_to, price, fee in spec
    )


def api(*spec: tuple[int | None, str, str]) -> Graduated:
    return Graduated("api", "api_calls", tiers(*spec))


V1_API = api((1000, "0.02", "0"), (10000, "0.015", "0"), (None, "0.01", "0"))
V2_API = api((1000, "0.03", "0"), (10000, "0.02", "0"), (None, "0.01", "0"))


def two_versions(
    v1: tuple[Charge, ...],
    v2: tuple[Charge, ...],
    currency: Currency = USD,
    rounding: Rounding = Rounding.HALF_UP,
) -> tuple[PriceBook, tuple[Segment, ...]]:
    """v1 from Jan 1, v2 from Jan 15; segments for January."""
    book = PriceBook(
        "standard",
        currency,
        rounding,
        (
            VersionSpec(label="v1", effective_from=JAN, charges=v1).recorded(1),
            VersionSpec(label="v2", effective_from=MID, charges=v2).recorded(2),
        ),
    )
    return book, book.segments(JAN, FEB, 2)


def usage(segments: tuple[Segment, ...], *quantities: str | int) -> list[SegmentUsage]:
    return [SegmentUsage(s, Decimal(q)) for s, q in zip(segments, quantities, strict=True)]


def test_mid_period_price_change_carries_the_graduated_tier_position() -> None:
    book, segments = two_versions((V1_API,), (V2_API,))
    rated = rate_additive(book, "api", usage(segments, 800, 700))
    # 800 x 0.02 + 200 x 0.03 + 500 x 0.02 = 16 + 6 + 10
    assert rated.exact_amount == Decimal(32)
    assert rated.amount == Decimal("32.00")
    assert rated.quantity == Decimal(1500)
    assert (rated.charge, rated.model, rated.meter) == ("api", "graduated", "api_calls")
    explanation = rated.explanation
    assert explanation.formula == "v1: 800 x 0.02 + v2: 200 x 0.03 + 500 x 0.02 = 32.00"
    assert explanation.basis is Basis.SEGMENTS
    data = explanation.to_dict()
    assert [v["version"] for v in data["versions"]] == ["v1", "v2"]
    assert data["versions"][1]["effective_from"] == "2024-01-15T00:00:00Z"
    assert [
        (s["start"], s["end"], s["version"], s["quantity"], s["amount"]) for s in data["segments"]
    ] == [
        ("2024-01-01T00:00:00Z", "2024-01-15T00:00:00Z", "v1", "800", "16"),
        ("2024-01-15T00:00:00Z", "2024-02-01T00:00:00Z", "v2", "700", "16"),
    ]
    assert data["segments"][1]["tiers"] == [
        {"tier": 1, "from": "0", "up_to": "1000", "units": "200", "unit_price": "0.03",
         "flat_fee": "0", "amount": "6"},
        {"tier": 2, "from": "1000", "up_to": "10000", "units": "500", "unit_price": "0.02",
         "flat_fee": "0", "amount": "10"},
    ]  # fmt: skip
    assert data["segments"][1]["formula"] == "200 x 0.03 + 500 x 0.02 = 16"
    assert (data["exact_amount"], data["amount"], data["price_book"]) == ("32", "32.00", "standard")


@pytest.mark.parametrize(
    ("before", "after", "amount", "formula"),
    [
        # tier 2 first receives units in v2's segment: v2's fee
        (800, 700, "52.00", "v1: 800 x 0.02 + v2: 200 x 0.03 + 500 x 0.02 + 20.00 (tier 2 flat fee) = 52.00"),
        # tier 2 already received units under v1: its fee was charged there, once
        (1500, 100, "39.50", "v1: 1,000 x 0.02 + 500 x 0.015 + 10.00 (tier 2 flat fee) + v2: 100 x 0.02 = 39.50"),
    ],
)  # fmt: skip
def test_tier_flat_fee_is_charged_once_from_the_version_where_the_tier_starts(
    before: int, after: int, amount: str, formula: str
) -> None:
    v1 = api((1000, "0.02", "0"), (10000, "0.015", "10"), (None, "0.01", "0"))
    v2 = api((1000, "0.03", "0"), (10000, "0.02", "20"), (None, "0.01", "0"))
    book, segments = two_versions((v1,), (v2,))
    rated = rate_additive(book, "api", usage(segments, before, after))
    assert str(rated.amount) == amount
    assert rated.explanation.formula == formula


@pytest.mark.parametrize(
    ("quantity", "formula"),
    [
        (0, "0 units = 0.00"),
        (12500, "1,000 x 0.02 + 9,000 x 0.015 + 2,500 x 0.01 = 180.00"),
        (1_000_000, "1,000 x 0.02 + 9,000 x 0.015 + 990,000 x 0.01 = 10,055.00"),
    ],
)
def test_single_segment_formula(quantity: int, formula: str) -> None:
    book, segments = two_versions((V1_API,), (V1_API,))
    rated = rate_additive(book, "api", usage(segments[:1], quantity))
    assert rated.explanation.formula == formula


def test_non_additive_usage_is_priced_with_the_version_at_the_end_of_the_period() -> None:
    book, segments = two_versions((V1_API,), (V2_API,))
    rated = rate_non_additive(book, "api", segments, Decimal(1500))
    assert rated.amount == Decimal("40.00")  # 1,000 x 0.03 + 500 x 0.02, all v2
    explanation = rated.explanation
    assert explanation.basis is Basis.END_OF_PERIOD
    assert explanation.formula == "1,000 x 0.03 + 500 x 0.02 = 40.00"
    assert [(s.start, s.end, s.version.label) for s in explanation.segments] == [(JAN, FEB, "v2")]
    assert explanation.notes == (
        "non-additive usage is priced with version v2 (effective 2024-01-15T00:00:00Z), "
        "in effect at the end of the period",
    )


def test_each_line_is_rounded_once_at_the_end() -> None:
    half_cent = (PerUnit("api", "api_calls", Decimal("0.005")),)
    book, segments = two_versions(half_cent, half_cent)
    rated = rate_additive(book, "api", usage(segments, 1, 1))
    assert rated.exact_amount == Decimal("0.010")
    assert rated.amount == Decimal("0.01")  # not 0.01 + 0.01


@pytest.mark.parametrize(
    ("currency", "rounding", "price", "quantity", "amount", "formula"),
    [
        ("USD", Rounding.HALF_UP, "0.675", 1, "0.68", "1 x 0.675 = 0.68"),
        ("USD", Rounding.HALF_EVEN, "0.665", 1, "0.66", "1 x 0.665 = 0.66"),
        ("USD", Rounding.HALF_UP, "0.02", 1234, "24.68", "1,234 x 0.02 = 24.68"),
        ("JPY", Rounding.HALF_UP, "1.5", 1233, "1850", "1,233 x 1.5 = 1,850"),
        ("JPY", Rounding.HALF_EVEN, "0.5", 5, "2", "5 x 0.5 = 2"),
        ("BHD", Rounding.HALF_UP, "1.2345", 1, "1.235", "1 x 1.2345 = 1.235"),
        ("BHD", Rounding.HALF_UP, "0.1", 12345, "1234.500", "12,345 x 0.100 = 1,234.500"),
    ],
)
def test_the_books_currency_and_rounding(
    currency: str, rounding: Rounding, price: str, quantity: int, amount: str, formula: str
) -> None:
    charge = (PerUnit("api", "api_calls", Decimal(price)),)
    book, segments = two_versions(charge, charge, Currency(currency), rounding)
    rated = rate_additive(book, "api", usage(segments[:1], quantity))
    assert str(rated.amount) == amount
    assert rated.explanation.formula == formula
    assert rated.explanation.to_dict()["amount"] == amount


def test_segments_where_the_charge_does_not_exist_bill_nothing() -> None:
    book, segments = two_versions((), (V2_API,))
    rated = rate_additive(book, "api", usage(segments, 5000, 700))
    assert rated.amount == Decimal("21.00")  # only v2's 700 units, from tier position 0
    assert rated.quantity == Decimal(700)
    assert [s.version.label for s in rated.explanation.segments] == ["v2"]
    assert rated.explanation.notes == (
        "charge api is not in version v1 (2024-01-01T00:00:00Z to 2024-01-15T00:00:00Z): "
        "nothing billed for that time",
    )


def test_negative_quantity_is_refused_for_tiered_models() -> None:
    book, segments = two_versions((V1_API,), (V2_API,))
    with pytest.raises(MeterlineError) as info:
        rate_additive(book, "api", usage(segments, 800, -1))
    assert info.value.code is ErrorCode.INVALID_ARGUMENT
    assert "negative quantity -1" in info.value.message


def test_negative_quantity_is_linear_for_per_unit() -> None:
    charge = (PerUnit("api", "api_calls", Decimal("0.02")),)
    book, segments = two_versions(charge, charge)
    rated = rate_additive(book, "api", usage(segments, 100, -110))
    assert rated.amount == Decimal("-0.20")


def _plain(value: Any) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return type(value) in (str, int)


def test_explanation_is_plain_deterministic_data() -> None:
    book, segments = two_versions(
        (V1_API, Flat("platform", Decimal(49))), (V2_API, Flat("platform", Decimal(99)))
    )
    lines = [
        rate_additive(book, "api", usage(segments, 800, 700)),
        rate_non_additive(book, "api", segments, Decimal(3)),
        rate_flat(book, "platform", JAN, FEB, segments),
    ]
    for line in lines:
        data = line.explanation.to_dict()
        assert _plain(data)
        assert dumps(data) == dumps(line.explanation.to_dict())


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("empty", "at least one segment"),
        ("overlap", "must not overlap"),
        ("foreign", "not in price book"),
        ("flat", "rate it with rate_flat"),
        ("unknown", "defines charge 'nope'"),
    ],
)
def test_misuse_is_refused(problem: str, message: str) -> None:
    book, segments = two_versions((V1_API, Flat("platform", Decimal(49))), (V2_API,))
    other, _ = two_versions((V2_API,), (V1_API,))
    cases: dict[str, tuple[str, list[SegmentUsage]]] = {
        "empty": ("api", []),
        "overlap": ("api", usage((segments[1], segments[0]), 1, 1)),
        "foreign": ("api", [SegmentUsage(Segment(JAN, MID, other.versions[0]), Decimal(1))]),
        "flat": ("platform", usage(segments, 1, 1)),
        "unknown": ("nope", usage(segments, 1, 1)),
    }
    code, rows = cases[problem]
    with pytest.raises(ValueError, match=message):
        rate_additive(book, code, rows)


def test_non_additive_needs_the_charge_at_the_end() -> None:
    book, segments = two_versions((V1_API,), ())
    with pytest.raises(ValueError, match="v2 does not define charge 'api'"):
        rate_non_additive(book, "api", segments, Decimal(1))


def test_rate_flat_refuses_a_metered_charge() -> None:
    book, segments = two_versions((V1_API,), (V2_API,))
    with pytest.raises(ValueError, match="rate it with rate_additive"):
        rate_flat(book, "api", JAN, FEB, segments)
