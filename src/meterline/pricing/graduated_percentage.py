"""graduated_percentage: graduated tiers over the meter's sum, each tier a rate (DESIGN §5).

Tiers [10,000 @ 3%, 100,000 @ 2%, null @ 1%] at a sum of 150,000.00:
3% x 10,000 + 2% x 90,000 + 1% x 50,000 = 300 + 1,800 + 500 = 2,600.00; each
tier that receives part of the sum adds its flat_fee. The position in the
tiers carries across price segments and a zero sum falls in the first tier,
exactly as for graduated (the arithmetic is shared: graduated.price_tiers).
"""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing.charges import ZERO, GraduatedPercentage
from meterline.pricing.explanation import TierLine, grouped, percent_text, price_text
from meterline.pricing.graduated import GraduatedResult, price_tiers


def price_graduated_percentage(
    charge: GraduatedPercentage,
    amount: Decimal,
    currency: Currency,
    position: Decimal = ZERO,
    fees_charged: frozenset[int] = frozenset(),
    zero_usage: bool = False,
) -> GraduatedResult:
    """Price one segment's sum after `position` of the period's sum already priced."""
    tiers = tuple(tier.as_tier() for tier in charge.tiers)
    return price_tiers(tiers, amount, currency, position, fees_charged, zero_usage, _terms)


def _terms(line: TierLine, currency: Currency) -> list[str]:
    terms = [f"{percent_text(line.unit_price)} x {grouped(line.units)}"] if line.units else []
    if line.flat_fee:
        terms.append(f"{price_text(line.flat_fee, currency)} (tier {line.tier} flat fee)")
    return terms
