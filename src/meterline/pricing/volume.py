"""volume: the one tier holding the whole period quantity prices every unit (DESIGN §5).

Tiers [1000 @ 0.10, 10000 @ 0.08, null @ 0.05] at 5,000 units: 5,000 x 0.08 =
400.00. A period quantity of 0 falls in the first tier: 0 x its price plus its
flat fee (the zero-usage convention OpenMeter and Lago share).

Across a mid-period price change, the tier is selected by the PERIOD total
against each segment's own version's tiers, and that segment's units are priced
at that tier's unit price. The selected tier's flat_fee is added once, from the
version in effect at the end of the period (the last segment priced by volume).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import fmt, mul, total
from meterline.pricing.charges import ZERO, Tier, Volume
from meterline.pricing.explanation import Priced, TierLine, grouped, price_text
from meterline.pricing.graduated import tier_ranges


def select_tier(tiers: Sequence[Tier], period_total: Decimal) -> int:
    """Index of the tier whose range (after, up_to] holds the total; 0 falls in the first."""
    if period_total <= 0:
        return 0
    for index, tier in enumerate(tiers):
        if tier.up_to is None or period_total <= tier.up_to:
            return index
    raise ValueError("tiers must end with an unbounded tier (up_to null)")


def price_volume(
    charge: Volume,
    units: Decimal,
    period_total: Decimal,
    currency: Currency,
    with_flat_fee: bool = True,
) -> Priced:
    """Price a segment's `units` at the tier selected by `period_total`."""
    if units < 0 or period_total < units:
        raise ValueError("volume pricing needs 0 <= units <= period_total")
    index = select_tier(charge.tiers, period_total)
    tier = charge.tiers[index]
    after, up_to = tier_ranges(charge.tiers)[index]
    fee = tier.flat_fee if with_flat_fee else ZERO
    amount = total([mul(units, tier.unit_price), fee])
    terms = [f"{grouped(units)} x {price_text(tier.unit_price, currency)}"] if units else []
    if fee:
        terms.append(f"{price_text(fee, currency)} (tier {index + 1} flat fee)")
    return Priced(
        amount=amount,
        terms=tuple(terms),
        tiers=(TierLine(index + 1, after, up_to, units, tier.unit_price, fee, amount),),
        pricing=(("period_quantity", fmt(period_total)), ("selected_tier", str(index + 1))),
        note=f"tier {index + 1} holds the period quantity of {grouped(period_total)}",
    )
