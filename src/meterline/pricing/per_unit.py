"""per_unit: quantity x unit_price, per segment (DESIGN §5).

With `free_units`, the first N units of the period are free and the position
carries across segments (free_units.py): 1,500 units with 1,000 free at 0.02 =
500 x 0.02 = 10.00.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import fmt, mul, sub
from meterline.pricing.charges import ZERO, PerUnit
from meterline.pricing.explanation import Priced, grouped, price_text
from meterline.pricing.free_units import billable


def price_per_unit(
    charge: PerUnit, quantity: Decimal, currency: Currency, position: Decimal = ZERO
) -> Priced:
    """Linear in the quantity, so it is the one model where a negative quantity
    (a sum meter over credit events) has a meaning: a negative amount. Free
    units need a non-negative quantity."""
    price = price_text(charge.unit_price, currency)
    pricing: tuple[tuple[str, str], ...] = (("unit_price", fmt(charge.unit_price)),)
    if not charge.free_units:
        return Priced(
            amount=mul(quantity, charge.unit_price),
            terms=(f"{grouped(quantity)} x {price}",),
            pricing=pricing,
        )
    if quantity < 0:
        raise ValueError(f"charge {charge.code}: free_units cannot apply to a negative quantity")
    billed = billable(quantity, position, charge.free_units)
    term = f"{grouped(billed)} x {price}"
    if billed != quantity:
        term += f" ({grouped(sub(quantity, billed))} free)"
    return Priced(
        amount=mul(billed, charge.unit_price),
        terms=(term,),
        pricing=(*pricing, ("free_units", fmt(charge.free_units)), ("billed_units", fmt(billed))),
    )
