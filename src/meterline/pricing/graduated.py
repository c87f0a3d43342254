"""graduated: each tier prices the units that fall in its own range (DESIGN §5).

Tier i holds the units in (previous up_to, up_to]; a tier that receives units
adds units x unit_price plus its flat_fee. Tiers [1000 @ 0.02, 10000 @ 0.015,
null @ 0.01] at 12,500 units: 1,000 x 0.02 + 9,000 x 0.015 + 2,500 x 0.01 = 180.

Across a mid-period price change the tier position carries over: a segment's
units occupy (position, position + units], where position is the number of
units this charge priced earlier in the period, and are priced with the
segment's own version's tiers. A price change never resets a customer's tier.
A tier's flat_fee is added once per period, in the segment where that tier
(by position in the list) first receives units, from that segment's version.
A period that measured 0 falls in the first tier and pays its flat fee, from
the version in effect at the end of the period (units x price stay 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import mul, sub, total
from meterline.pricing.charges import ZERO, Graduated, Tier
from meterline.pricing.explanation import Priced, TierLine, grouped, price_text


def tier_ranges(tiers: Sequence[Tier]) -> list[tuple[Decimal, Decimal | None]]:
    """(after, up_to) per tier: tier i holds the units in (after, up_to]."""
    ranges: list[tuple[Decimal, Decimal | None]] = []
    after = ZERO
    for tier in tiers:
        ranges.append((after, tier.up_to))
        after = tier.up_to if tier.up_to is not None else after
    return ranges


def _overlap(start: Decimal, end: Decimal, after: Decimal, up_to: Decimal | None) -> Decimal:
    """How many of the units in (start, end] fall in the tier (after, up_to]."""
    top = end if up_to is None else min(end, up_to)
    return max(ZERO, sub(top, max(start, after)))


@dataclass(frozen=True)
class GraduatedResult:
    priced: Priced
    fees_charged: frozenset[int]  # tier indexes whose flat fee this period has paid


def price_graduated(
    charge: Graduated,
    units: Decimal,
    currency: Currency,
    position: Decimal = ZERO,
    fees_charged: frozenset[int] = frozenset(),
    zero_usage: bool = False,
) -> GraduatedResult:
    """Price `units` starting after `position` units already priced this period.

    `zero_usage`: the whole period measured 0, which falls in the first tier
    (the convention OpenMeter and Lago share): its flat fee is charged once.
    """
    return price_tiers(charge.tiers, units, currency, position, fees_charged, zero_usage, _terms)


def price_tiers(
    tiers: Sequence[Tier],
    units: Decimal,
    currency: Currency,
    position: Decimal,
    fees_charged: frozenset[int],
    zero_usage: bool,
    terms: Callable[[TierLine, Currency], list[str]],
) -> GraduatedResult:
    """Graduated tiers over (position, position + units]; shared with graduated_percentage."""
    if units < 0 or position < 0:
        raise ValueError("graduated pricing needs non-negative units and position")
    end = position + units
    lines: list[TierLine] = []
    for index, (tier, (after, up_to)) in enumerate(zip(tiers, tier_ranges(tiers), strict=True)):
        received = _overlap(position, end, after, up_to)
        at_zero = zero_usage and index == 0 and end == 0
        if received == 0 and not at_zero:
            continue
        fee = ZERO if index in fees_charged else tier.flat_fee
        amount = total([mul(received, tier.unit_price), fee])
        lines.append(TierLine(index + 1, after, up_to, received, tier.unit_price, fee, amount))
    charged = fees_charged | {line.tier - 1 for line in lines}
    priced = Priced(
        amount=total(line.amount for line in lines),
        terms=tuple(term for line in lines for term in terms(line, currency)),
        tiers=tuple(lines),
    )
    return GraduatedResult(priced, frozenset(charged))


def _terms(line: TierLine, currency: Currency) -> list[str]:
    terms = (
        [f"{grouped(line.units)} x {price_text(line.unit_price, currency)}"] if line.units else []
    )
    if line.flat_fee:
        terms.append(f"{price_text(line.flat_fee, currency)} (tier {line.tier} flat fee)")
    return terms
