"""Exact Decimal arithmetic for prices and quantities.

Every product, sum and difference of prices and quantities is computed with a
context that raises on any rounding, so an amount is either exact or an error,
never silently truncated at the default 28 digits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    localcontext,
)

from meterline.domain.decimals import PRECISION

_EXACT = Context(
    prec=PRECISION, traps=[Inexact, Rounded, InvalidOperation, DivisionByZero, Overflow]
)
_PRECISE = Context(prec=PRECISION)


@contextmanager
def exact() -> Iterator[Context]:
    """A Decimal context in which any inexact operation raises.

    Built from scratch, not copied from the caller's, and entered only around
    our own arithmetic (never around a caller's generator).
    """
    with localcontext(_EXACT) as ctx:
        yield ctx


def mul(a: Decimal, b: Decimal) -> Decimal:
    with exact():
        return a * b


def sub(a: Decimal, b: Decimal) -> Decimal:
    with exact():
        return a - b


def total(values: Iterable[Decimal]) -> Decimal:
    items = list(values)
    with exact():
        return sum(items, Decimal(0))


def ceil_div(a: Decimal, b: Decimal) -> Decimal:
    """ceil(a / b) for a >= 0, b > 0, exactly (integer quotient and remainder)."""
    with exact():
        quotient, remainder = divmod(a, b)
        return quotient + 1 if remainder else quotient


def ratio(a: Decimal, numerator: int, denominator: int) -> Decimal:
    """a x numerator / denominator to PRECISION significant digits.

    Proration (x 16 days / 31 days) has no finite decimal. The 60-digit result
    still rounds to the same minor unit as the true fraction: with a
    denominator of microseconds (< 10^14) and prices of a few decimals, a
    fraction not exactly on a half minor unit is more than 10^-25 away from
    one, while the 60-digit error is below 10^-29 for any amount under 10^30.
    """
    with localcontext(_PRECISE):
        return a * numerator / denominator


def precise_sub(a: Decimal, b: Decimal) -> Decimal:
    """a - b to PRECISION significant digits, for a prorated amount (from `ratio`), which
    has no finite decimal: exact subtraction could need more digits than it has. The
    result rounds to the same minor unit as the true difference (see `ratio`)."""
    with localcontext(_PRECISE):
        return a - b
