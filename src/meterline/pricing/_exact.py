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

from meterline.domain import decimals
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


# The operations below call the context's methods directly: the same arithmetic
# and traps as inside `exact()`, without entering a context per operation (rating
# does tens of them per line). Only trapped conditions matter; the flags the
# shared context collects are never read.


def mul(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.multiply(a, b)


def sub(a: Decimal, b: Decimal) -> Decimal:
    return _EXACT.subtract(a, b)


def total(values: Iterable[Decimal]) -> Decimal:
    out = Decimal(0)
    for v in values:
        out = _EXACT.add(out, v)
    return out


def ceil_div(a: Decimal, b: Decimal) -> Decimal:
    """ceil(a / b) for a >= 0, b > 0, exactly (integer quotient and remainder)."""
    quotient, remainder = _EXACT.divmod(a, b)
    return _EXACT.add(quotient, 1) if remainder else quotient


def fmt(value: Decimal | int) -> str:
    """`decimals.fmt` (canonical decimal text), from ``format(value, "f")`` (no
    exponent, every digit) with trailing fraction zeros cut: the same text without
    building the digit tuple (explanations and bodies format dozens per line;
    tests/pricing compare the two)."""
    if isinstance(value, int) or not value or not value.is_finite():
        return decimals.fmt(value)
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


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
