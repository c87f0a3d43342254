"""Currencies, rounding once to the minor unit, and money text (DESIGN §6)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Currency, Rounding, format_money, money_str, round_money

USD, JPY, BHD = Currency("USD"), Currency("JPY"), Currency("BHD")


@pytest.mark.parametrize(
    ("code", "digits"),
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("CLF", 4)],
)
def test_minor_digits_come_from_babel(code: str, digits: int) -> None:
    assert Currency(code).minor_digits == digits


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("ZZZ", "not an ISO 4217 currency code"),
        ("usd", "upper case"),
        ("US", "not an ISO 4217"),
        ("", "not an ISO 4217"),
        ("XXX", "not an ISO 4217"),  # "no currency"
        ("XAU", "not an ISO 4217"),  # gold: no minor unit in ISO 4217
        ("XTS", "not an ISO 4217"),  # testing code
    ],
)
def test_unknown_or_non_monetary_codes_are_refused(code: str, fragment: str) -> None:
    with pytest.raises(MeterlineError) as info:
        Currency(code)
    assert info.value.code is ErrorCode.INVALID_CATALOG
    assert fragment in info.value.message


@pytest.mark.parametrize(
    ("amount", "currency", "rounding", "expected"),
    [
        ("0.675", USD, Rounding.HALF_UP, "0.68"),
        ("0.665", USD, Rounding.HALF_UP, "0.67"),
        ("0.665", USD, Rounding.HALF_EVEN, "0.66"),
        ("0.675", USD, Rounding.HALF_EVEN, "0.68"),
        ("-0.675", USD, Rounding.HALF_UP, "-0.68"),  # ties away from zero
        ("-0.665", USD, Rounding.HALF_EVEN, "-0.66"),
        ("0.674999", USD, Rounding.HALF_UP, "0.67"),
        ("180", USD, Rounding.HALF_UP, "180.00"),
        ("1499.5", JPY, Rounding.HALF_UP, "1500"),
        ("1498.5", JPY, Rounding.HALF_EVEN, "1498"),
        ("0.4", JPY, Rounding.HALF_UP, "0"),
        ("1.2345", BHD, Rounding.HALF_UP, "1.235"),
        ("1.2345", BHD, Rounding.HALF_EVEN, "1.234"),
        ("12345678901234567890.125", USD, Rounding.HALF_EVEN, "12345678901234567890.12"),
    ],
)
def test_round_money(amount: str, currency: Currency, rounding: Rounding, expected: str) -> None:
    rounded = round_money(Decimal(amount), currency, rounding)
    assert str(rounded) == expected


def test_half_up_is_the_default() -> None:
    assert round_money(Decimal("0.665"), USD) == Decimal("0.67")


def test_rounding_to_zero_is_never_negative_zero() -> None:
    rounded = round_money(Decimal("-0.001"), USD)
    assert not rounded.is_signed()
    assert money_str(rounded, USD) == "0.00"


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("180.00", USD, "180.00"),
        ("180", USD, "180.00"),
        ("1.8E+2", USD, "180.00"),
        ("-12.5", USD, "-12.50"),
        ("-0", USD, "0.00"),
        ("1500", JPY, "1500"),
        ("1.235", BHD, "1.235"),
        ("0", BHD, "0.000"),
    ],
)
def test_money_str_has_exactly_the_minor_digits(
    amount: str, currency: Currency, expected: str
) -> None:
    assert money_str(Decimal(amount), currency) == expected


@pytest.mark.parametrize(("amount", "currency"), [("1.005", USD), ("0.5", JPY), ("1.2345", BHD)])
def test_money_str_refuses_to_round(amount: str, currency: Currency) -> None:
    with pytest.raises(ValueError, match="round_money"):
        money_str(Decimal(amount), currency)


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        ("1234.50", USD, "en_US", "$1,234.50"),
        ("-12.50", USD, "en_US", "-$12.50"),
        ("1500", JPY, "en_US", "¥1,500"),
        ("1.235", BHD, "en_US", "BHD1.235"),
        ("1234.5", USD, "de_DE", "1.234,50\xa0$"),
    ],
)
def test_format_money_for_people(
    amount: str, currency: Currency, locale: str, expected: str
) -> None:
    assert format_money(Decimal(amount), currency, locale) == expected


def test_iso_minor_units_win_over_cldr() -> None:
    from meterline.domain.money import Currency

    assert Currency("IQD").minor_digits == 3
    assert Currency("RSD").minor_digits == 2
