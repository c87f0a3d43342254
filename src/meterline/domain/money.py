"""Currencies, rounding to the minor unit and the text of money (DESIGN §6).

Amounts stay exact Decimals until a line is finished; then the line is rounded
once, here, to the currency's minor unit. Money in JSON is a string with exactly
the currency's minor digits, so "180.00" and "180.0" can never both appear.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal, localcontext
from enum import StrEnum
from functools import cache

from babel.numbers import format_currency, get_currency_precision, list_currencies

from meterline.domain.decimals import PRECISION
from meterline.domain.errors import ErrorCode, MeterlineError

# Codes babel knows that are not money one can invoice in: precious metals,
# bond-market units, SDR, testing and "no currency". ISO 4217 gives them no
# minor unit ("N.A."), so babel's default of 2 digits would be invented.
_NOT_INVOICEABLE = frozenset(
    {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XTS", "XUA", "XXX"}
)


# DESIGN §6 bills in ISO 4217 minor units. CLDR (babel) rounds these for cash
# display instead; the invoice follows ISO.
_ISO_MINOR_DIGITS = {
    "IQD": 3,
    "ALL": 2,
    "AFN": 2,
    "IRR": 2,
    "LAK": 2,
    "LBP": 2,
    "MGA": 2,
    "MMK": 2,
    "RSD": 2,
    "SYP": 2,
    "YER": 2,
}


@cache
def _known_codes() -> frozenset[str]:
    return frozenset(list_currencies()) - _NOT_INVOICEABLE


class Rounding(StrEnum):
    """How a finished line is rounded to the minor unit; a price book picks one.

    half_up rounds ties away from zero (-0.675 -> -0.68), so a credit mirrors
    the charge it reverses; half_even rounds ties to the even digit.
    """

    HALF_UP = "half_up"
    HALF_EVEN = "half_even"


# A fresh context, never a copy of the caller's: rounding must not depend on
# whatever traps or precision happen to be active around the call.
_CONTEXT = Context(prec=PRECISION)

_DECIMAL_ROUNDING = {Rounding.HALF_UP: ROUND_HALF_UP, Rounding.HALF_EVEN: ROUND_HALF_EVEN}


@dataclass(frozen=True)
class Currency:
    """An ISO 4217 currency with its ISO minor digits.

    Construction validates, so a Currency in hand is always one babel knows:
    an unknown or lower-case code raises INVALID_CATALOG. Digits come from
    babel (CLDR), which equals ISO 4217 for the common currencies (USD 2,
    JPY 0, BHD 3); where CLDR differs (IQD, ALL, AFN, ...) the ISO value wins.
    """

    code: str
    minor_digits: int = field(init=False)

    def __post_init__(self) -> None:
        if self.code not in _known_codes():
            hint = " (codes are upper case)" if self.code.upper() in _known_codes() else ""
            raise MeterlineError(
                ErrorCode.INVALID_CATALOG,
                f"{self.code!r} is not an ISO 4217 currency code{hint}",
                currency=self.code,
            )
        digits = _ISO_MINOR_DIGITS.get(self.code, get_currency_precision(self.code))
        object.__setattr__(self, "minor_digits", digits)

    @property
    def quantum(self) -> Decimal:
        """The minor unit as a Decimal exponent: USD 0.01, JPY 1, BHD 0.001."""
        return Decimal(1).scaleb(-self.minor_digits)

    def __str__(self) -> str:
        return self.code


def round_money(
    amount: Decimal, currency: Currency, rounding: Rounding = Rounding.HALF_UP
) -> Decimal:
    """Round an exact amount once to the minor unit (never "-0.00")."""
    with localcontext(_CONTEXT):
        rounded = amount.quantize(currency.quantum, rounding=_DECIMAL_ROUNDING[rounding])
    return rounded.copy_abs() if rounded.is_zero() else rounded


def _on_minor_unit(amount: Decimal, currency: Currency) -> Decimal:
    """The amount at exactly the minor digits; refuses to round silently."""
    with localcontext(_CONTEXT):
        quantized = amount.quantize(currency.quantum)
    if quantized != amount:
        raise ValueError(
            f"{amount} has more than {currency.minor_digits} decimals for {currency.code}; "
            "round the line with round_money first"
        )
    return quantized.copy_abs() if quantized.is_zero() else quantized


def money_str(amount: Decimal, currency: Currency) -> str:
    """Money as JSON text: exactly the minor digits ("180.00", JPY "1500", "-12.50").

    The amount must already be on the minor unit: printing must never round,
    or the text could disagree with the number that was summed.
    """
    return f"{_on_minor_unit(amount, currency):f}"


def format_money(amount: Decimal, currency: Currency, locale: str = "en_US") -> str:
    """Human rendering with symbol and grouping ("$1,234.50", "¥1,500"); display only."""
    return format_currency(_on_minor_unit(amount, currency), currency.code, locale=locale)
