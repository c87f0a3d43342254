"""Free units: the first N units of the period cost nothing (DESIGN §5).

Used by per_unit and package (`free_units`) and by percentage (`free_units`
exempt from the rate, `free_events` exempt from the fixed fee). The position
carries across price segments as a graduated tier position does: a segment's
units occupy (position, position + units], and only the part above N is billed.
So a price change mid-period never hands out the allowance twice.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.pricing._exact import sub
from meterline.pricing.charges import ZERO


def billable(units: Decimal, position: Decimal, free: Decimal) -> Decimal:
    """How many of the units in (position, position + units] lie above `free`."""
    if units < 0 or position < 0:
        raise ValueError("free units need a non-negative quantity and position")
    end = position + units
    return max(ZERO, sub(end, max(position, free)))


def free_taken(units: Decimal, position: Decimal, free: Decimal) -> Decimal:
    """The part of `units` covered by what is left of the allowance."""
    return sub(units, billable(units, position, free))
