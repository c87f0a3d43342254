"""dynamic: each event carries its own price (DESIGN §5).

The meter is a sum of the price property, so the segment's quantity already is
the sum of the events' prices: amount = that sum x `multiplier` (default 1).
Lago's dynamic model is the same idea (only a sum metric is compatible). Per
segment, linear, so a negative sum (a refund event) simply lowers the amount.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import fmt, mul
from meterline.pricing.charges import Dynamic
from meterline.pricing.explanation import Priced, grouped


def price_dynamic(charge: Dynamic, priced_sum: Decimal, currency: Currency) -> Priced:
    del currency  # the sum is already money; nothing to pad
    term = f"{grouped(priced_sum)} (sum of event prices)"
    if charge.multiplier != 1:
        term += f" x {grouped(charge.multiplier)}"
    return Priced(
        amount=mul(priced_sum, charge.multiplier),
        terms=(term,),
        pricing=(("multiplier", fmt(charge.multiplier)),),
    )
