"""maximum_spend: a cap on the period's usage charges (DESIGN §5).

The mirror of minimum_spend: the maximum comes from the version in effect at
the end of the period and is compared with the sum of the ROUNDED usage lines;
above it, an adjustment line subtracts the excess (a negative line), so the
usage lines still show what was used and the invoice shows the cap applied.
Prorated by active time for partial periods unless `prorate: false`, like the
minimum. OpenMeter's commitments apply minimum and maximum spend the same way,
after pricing and before tax.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import fmt, precise_sub
from meterline.pricing.explanation import Priced, price_text
from meterline.pricing.minimum import spend_limit

# The line identity of the cap; catalog charge codes may not use it.
MAXIMUM_SPEND_CODE = "maximum_spend"


def cap(
    maximum: Decimal,
    usage_total: Decimal,
    currency: Currency,
    active_us: int = 1,
    period_us: int = 1,
    prorate: bool = True,
) -> Priced | None:
    """-(usage - maximum (prorated)) when usage is above it; None (no line) otherwise."""
    limit, text = spend_limit(maximum, active_us, period_us, prorate, currency, "maximum spend")
    if usage_total <= limit:
        return None
    term = f"{text} - {price_text(usage_total, currency)} usage"
    return Priced(
        amount=precise_sub(limit, usage_total),
        terms=(term,),
        pricing=(("limit", fmt(limit)), ("prorate", "true" if prorate else "false")),
    )
