"""flat: a fixed fee per billing period, prorated by active time (DESIGN §5).

Prorated share = amount x active microseconds / period microseconds
(49.00 over 16 of 31 days = 25.29 after rounding). Each segment's share uses
the amount of the version in effect in it. Such fractions rarely have a finite
decimal, so the line is computed as ONE division of the exact numerator
sum(amount x active_us) by period_us; the segment shares in the explanation
are the same fractions to 60 significant digits, for reading. Whether to prorate at
all follows the charge in effect at the end of the active time; with
`prorate: false` the full amount of that version is charged once.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import mul, ratio, total
from meterline.pricing.charges import Flat
from meterline.pricing.explanation import Priced, durations_text, price_text


def price_flat(charge: Flat, active_us: int, period_us: int, currency: Currency) -> Priced:
    """The share of the fee for `active_us` of a `period_us` billing period."""
    if not 0 < active_us <= period_us:
        raise ValueError("active time must be positive and within the period")
    fee = price_text(charge.amount, currency)
    pricing = (("active_us", str(active_us)), ("period_us", str(period_us)))
    if active_us == period_us:
        return Priced(charge.amount, (fee,), pricing=pricing, note="full period")
    active, whole = durations_text(active_us, period_us)
    return Priced(
        amount=ratio(charge.amount, active_us, period_us),
        terms=(f"{fee} x {active} / {whole}",),
        pricing=pricing,
    )


def price_flat_unprorated(charge: Flat, currency: Currency) -> Priced:
    """`prorate: false`: the full amount, however short the active time."""
    return Priced(charge.amount, (price_text(charge.amount, currency),), note="not prorated")


def prorated_total(shares: Sequence[tuple[Flat, int]], period_us: int) -> Decimal:
    """sum(amount x active_us) / period_us for (charge, active_us) shares, with one division."""
    numerator = total(mul(charge.amount, Decimal(active_us)) for charge, active_us in shares)
    return ratio(numerator, 1, period_us)
