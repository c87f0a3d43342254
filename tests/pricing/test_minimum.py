"""minimum_spend: a true-up line when rounded usage falls short (DESIGN §5)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.charges import PerUnit
from meterline.pricing.explanation import Basis
from meterline.pricing.minimum import MINIMUM_SPEND_CODE, true_up
from meterline.pricing.pricebook import PriceBook, Segment, VersionSpec
from meterline.pricing.rating import rate_minimum_spend

USD = Currency("USD")
API = PerUnit("api", "api_calls", Decimal("0.02"))


def T(text: str) -> int:
    return parse_rfc3339(text)


def book_and_segments(*minimums: str | None) -> tuple[PriceBook, tuple[Segment, ...]]:
    versions = tuple(
        VersionSpec(
            label=f"v{i + 1}",
            effective_from=T(f"2024-01-{1 + 14 * i:02d}T00:00:00Z"),
            charges=(API,),
            minimum_spend=None if minimum is None else Decimal(minimum),
        ).recorded(i + 1)
        for i, minimum in enumerate(minimums)
    )
    book = PriceBook("standard", USD, Rounding.HALF_UP, versions)
    return book, book.segments(T("2024-01-01T00:00:00Z"), T("2024-02-01T00:00:00Z"), 100)


@pytest.mark.parametrize(
    ("minimum", "usage", "expected"),
    [
        ("100.00", ["60.00"], "40.00"),
        ("100.00", ["25.00", "35.00"], "40.00"),
        ("100.00", ["120.00"], None),
        ("100.00", ["100.00"], None),  # reaching the minimum exactly: no line
        ("100.00", [], "100.00"),
        ("100", ["99.99"], "0.01"),
        (None, ["0.00"], None),
    ],
)
def test_minimum_spend_true_up(minimum: str | None, usage: list[str], expected: str | None) -> None:
    book, segments = book_and_segments(minimum)
    rated = rate_minimum_spend(book, segments, [Decimal(u) for u in usage])
    if expected is None:
        assert rated is None
        return
    assert rated is not None
    assert rated.amount == Decimal(expected)
    assert rated.charge == MINIMUM_SPEND_CODE
    assert rated.explanation.basis is Basis.END_OF_PERIOD


def test_true_up_formula() -> None:
    book, segments = book_and_segments("100.00")
    rated = rate_minimum_spend(book, segments, [Decimal("60.00")])
    assert rated is not None
    assert rated.explanation.formula == "100.00 minimum spend - 60.00 usage = 40.00"


def test_minimum_comes_from_the_version_at_the_end_of_the_period() -> None:
    book, segments = book_and_segments("100.00", "200.00")
    assert [s.version.label for s in segments] == ["v1", "v2"]
    rated = rate_minimum_spend(book, segments, [Decimal("60.00")])
    assert rated is not None
    assert rated.amount == Decimal("140.00")
    assert [v.label for v in rated.explanation.versions] == ["v2"]


def test_no_minimum_at_the_end_means_no_line() -> None:
    book, segments = book_and_segments("100.00", None)
    assert rate_minimum_spend(book, segments, [Decimal("60.00")]) is None


def test_true_up_is_exact_difference() -> None:
    priced = true_up(Decimal("100"), Decimal("60.00"), USD)
    assert priced is not None
    assert priced.amount == Decimal("40")
    assert true_up(Decimal("100"), Decimal("100.00"), USD) is None


def _partial(minimum: str, prorate: bool) -> tuple[PriceBook, tuple[Segment, ...]]:
    version = VersionSpec(
        label="v1",
        effective_from=T("2024-01-01T00:00:00Z"),
        charges=(API,),
        minimum_spend=Decimal(minimum),
        minimum_prorate=prorate,
    ).recorded(1)
    book = PriceBook("standard", USD, Rounding.HALF_UP, (version,))
    # subscription started Jan 16: 16 of January's 31 days are active
    return book, book.segments(T("2024-01-16T00:00:00Z"), T("2024-02-01T00:00:00Z"), 100)


JANUARY = (T("2024-01-01T00:00:00Z"), T("2024-02-01T00:00:00Z"))


@pytest.mark.parametrize(
    ("prorate", "usage", "expected", "formula"),
    [
        pytest.param(
            True, "20.00", "31.61",
            "100.00 minimum spend x 16 days / 31 days - 20.00 usage = 31.61",
            id="100.00 over 16 of 31 days = 51.6129... - 20.00 usage = 31.61",
        ),
        pytest.param(
            True, "60.00", None, "", id="60.00 usage above the prorated 51.61: no true-up",
        ),
        pytest.param(
            False, "20.00", "80.00", "100.00 minimum spend - 20.00 usage = 80.00",
            id="prorate false: 100.00 - 20.00 = 80.00 whatever the active time",
        ),
    ],
)  # fmt: skip
def test_minimum_is_prorated_for_a_partial_period(
    prorate: bool, usage: str, expected: str | None, formula: str
) -> None:
    book, segments = _partial("100.00", prorate)
    rated = rate_minimum_spend(book, segments, [Decimal(usage)], JANUARY)
    if expected is None:
        assert rated is None
        return
    assert rated is not None
    assert str(rated.amount) == expected
    assert rated.explanation.formula == formula


def test_a_full_period_minimum_is_not_prorated_100_minus_60_is_40() -> None:
    book, segments = book_and_segments("100.00")
    rated = rate_minimum_spend(book, segments, [Decimal("60.00")], JANUARY)
    assert rated is not None and str(rated.amount) == "40.00"
