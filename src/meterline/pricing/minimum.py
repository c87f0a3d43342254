"""minimum_spend: a true-up to the version's minimum (DESIGN §5).

The minimum comes from the version in effect at the end of the period and is
compared with the sum of the ROUNDED usage (metered) lines, the same numbers
the customer sees: the invoice then adds up to at least the minimum. Flat fees
do not count toward it. The minimum is not prorated for partial periods.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import sub
from meterline.pricing.explanation import Priced, price_text

# The line identity of the true-up; catalog charge codes may not use it.
MINIMUM_SPEND_CODE = "minimum_spend"


def true_up(minimum: Decimal, usage_total: Decimal, currency: Currency) -> Priced | None:
    """minimum - usage when usage is below the minimum; None (no line) otherwise."""
    if usage_total >= minimum:
        return None
    term = (
        f"{price_text(minimum, currency)} minimum spend - {price_text(usage_total, currency)} usage"
    )
    return Priced(amount=sub(minimum, usage_total), terms=(term,))
