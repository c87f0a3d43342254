"""per_unit: quantity x unit_price, per segment (DESIGN §5)."""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.decimals import fmt
from meterline.domain.money import Currency
from meterline.pricing._exact import mul
from meterline.pricing.charges import PerUnit
from meterline.pricing.explanation import Priced, grouped, price_text


def price_per_unit(charge: PerUnit, quantity: Decimal, currency: Currency) -> Priced:
    """Linear in the quantity, so it is the one model where a negative quantity
    (a sum meter over credit events) has a meaning: a negative amount."""
    return Priced(
        amount=mul(quantity, charge.unit_price),
        terms=(f"{grouped(quantity)} x {price_text(charge.unit_price, currency)}",),
        pricing=(("unit_price", fmt(charge.unit_price)),),
    )
