"""conversion: turn a meter value into the unit a price is written in (DESIGN §5).

quantity = meter value x multiply_by / divide_by, rounded `up`, `down` or
`half_up` to `precision` decimals, before any pricing: 2,500,000,001 bytes at
divide_by 1,000,000,000 rounded up = 3 GB.

Across price segments the rounding is applied to the running total, and each
segment gets the difference of the converted running totals: the segments
then add up to the conversion of the period total, so splitting a period at a
price change never rounds up twice (a segment may receive 0 converted units).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, localcontext

from meterline.domain.decimals import PRECISION
from meterline.pricing._exact import fmt, sub
from meterline.pricing.charges import ZERO, Conversion, ConversionRounding
from meterline.pricing.explanation import grouped

_MODES = {
    ConversionRounding.UP: ROUND_CEILING,
    ConversionRounding.DOWN: ROUND_FLOOR,
    ConversionRounding.HALF_UP: ROUND_HALF_UP,
}


def convert(value: Decimal, conversion: Conversion) -> Decimal:
    """One meter value in the price's unit, rounded as the conversion says."""
    with localcontext() as ctx:
        ctx.prec = PRECISION
        raw = value * conversion.multiply_by / conversion.divide_by
        quantum = Decimal(1).scaleb(-conversion.precision)
        return raw.quantize(quantum, rounding=_MODES[conversion.rounding]).normalize() + ZERO


def convert_segments(values: Sequence[Decimal], conversion: Conversion) -> list[Decimal]:
    """Per-segment quantities whose sum is the conversion of the period total."""
    out: list[Decimal] = []
    running, converted = ZERO, ZERO
    for value in values:
        running += value
        now = convert(running, conversion)
        out.append(sub(now, converted))
        converted = now
    return out


def describe(metered: Decimal, quantity: Decimal, conversion: Conversion) -> str:
    """Both numbers in words: "2,500,000,001 metered / 1,000,000,000, rounded up = 3"."""
    steps = []
    if conversion.multiply_by != 1:
        steps.append(f"x {grouped(conversion.multiply_by)}")
    if conversion.divide_by != 1:
        steps.append(f"/ {grouped(conversion.divide_by)}")
    places = "" if conversion.precision == 0 else f" to {conversion.precision} decimals"
    how = {"up": "rounded up", "down": "rounded down", "half_up": "rounded half up"}
    return (
        f"{grouped(metered)} metered {' '.join(steps)}, {how[conversion.rounding.value]}"
        f"{places} = {grouped(quantity)} billed".replace("  ", " ")
    )


def pricing_pairs(metered: Decimal, quantity: Decimal) -> tuple[tuple[str, str], ...]:
    return (("metered_quantity", fmt(metered)), ("converted_quantity", fmt(quantity)))
