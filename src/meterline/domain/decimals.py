"""Exact decimal handling: parsing untrusted numbers and printing canonical ones.

Quantities and prices never pass through float. The canonical text of a decimal
has no exponent and no trailing zeros ("12500", "0.5"), so equal values always
print (and hash) the same.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext

# Far more precision than any quantity or price needs; set on every operation
# that could otherwise round (context precision defaults to 28 digits).
PRECISION = 60


def fmt(value: Decimal | int) -> str:
    """Canonical decimal text: no exponent, no trailing zeros, "-0" becomes "0"."""
    if isinstance(value, int):
        return str(value)
    if not value.is_finite():
        raise ValueError(f"not a finite decimal: {value}")
    if value.is_zero():
        return "0"
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    if exponent >= 0:
        text = text + "0" * exponent
    else:
        point = len(text) + exponent
        text = "0." + "0" * -point + text if point <= 0 else text[:point] + "." + text[point:]
        text = text.rstrip("0").rstrip(".")
    return ("-" if sign else "") + text


def normalize(value: Decimal) -> Decimal:
    """The canonical Decimal of a value (same as parsing ``fmt(value)``)."""
    return Decimal(fmt(value))


def parse_decimal(text: str) -> Decimal | None:
    """Parse a plain decimal string as sent by a user; None if it is not one.

    Accepts an optional sign, digits, an optional fraction and an optional
    exponent. Rejects NaN, infinities, blanks and anything with spaces inside.
    """
    text = text.strip()
    if not text or len(text) > 100:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return value


def exact_sum(values: list[Decimal]) -> Decimal:
    """Sum without the context's rounding ever kicking in."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        return sum(values, Decimal(0))


# Bounds of every decimal in a catalog (prices, amounts, rates, tier bounds,
# package sizes, minimum spends, tax rates, credits): below 10^15 (a
# quadrillion in any currency) with at most 12 fraction digits. A price times
# any metered quantity (metering.values bounds) then stays far inside the
# exact arithmetic of pricing._exact, and "1e400" is refused where it is typed.
CATALOG_MAX_INTEGER_DIGITS = 15
CATALOG_MAX_FRACTION_DIGITS = 12


def catalog_decimal_problem(value: Decimal) -> str | None:
    """Why a catalog decimal is out of bounds, or None (checked on the tuple,
    so a huge exponent costs nothing)."""
    if not value.is_finite():
        return f"{value} is not a finite number"
    if value.is_zero():
        return None
    if value.adjusted() >= CATALOG_MAX_INTEGER_DIGITS:
        return (
            f"{value} is out of range (at most {CATALOG_MAX_INTEGER_DIGITS} digits "
            "before the decimal point)"
        )
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    if -(exponent + trailing) > CATALOG_MAX_FRACTION_DIGITS:
        return f"{value} has more than {CATALOG_MAX_FRACTION_DIGITS} digits after the decimal point"
    return None
