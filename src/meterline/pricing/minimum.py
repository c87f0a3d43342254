"""minimum_spend: a true-up to the version's minimum (DESIGN §5).

The minimum comes from the version in effect at the end of the period and is
compared with the sum of the ROUNDED usage (metered) lines, the same numbers
the customer sees: the invoice then adds up to at least the minimum. Flat fees
do not count toward it.

For a partial period (subscription start or end mid-period) the minimum is
prorated by active time, like a flat fee: 100.00 over 16 of 31 days = 51.61...
(Lago prorates spending minimums by days used); `prorate: false` keeps it whole.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import fmt, precise_sub, ratio
from meterline.pricing.explanation import Priced, durations_text, price_text

# The line identity of the true-up; catalog charge codes may not use it.
MINIMUM_SPEND_CODE = "minimum_spend"


def spend_limit(
    limit: Decimal, active_us: int, period_us: int, prorate: bool, currency: Currency, what: str
) -> tuple[Decimal, str]:
    """The limit for the active time (exact) and its words: "100.00 minimum spend x 16 days /
    31 days"."""
    if not 0 < active_us <= period_us:
        raise ValueError("active time must be positive and within the period")
    text = f"{price_text(limit, currency)} {what}"
    if not prorate or active_us == period_us:
        return limit, text
    active, whole = durations_text(active_us, period_us)
    return ratio(limit, active_us, period_us), f"{text} x {active} / {whole}"


def true_up(
    minimum: Decimal,
    usage_total: Decimal,
    currency: Currency,
    active_us: int = 1,
    period_us: int = 1,
    prorate: bool = True,
) -> Priced | None:
    """minimum (prorated) - usage when usage is below it; None (no line) otherwise."""
    limit, text = spend_limit(minimum, active_us, period_us, prorate, currency, "minimum spend")
    if usage_total >= limit:
        return None
    term = f"{text} - {price_text(usage_total, currency)} usage"
    return Priced(
        amount=precise_sub(limit, usage_total), terms=(term,), pricing=_pricing(limit, prorate)
    )


def _pricing(limit: Decimal, prorate: bool) -> tuple[tuple[str, str], ...]:
    return (("limit", fmt(limit)), ("prorate", "true" if prorate else "false"))
