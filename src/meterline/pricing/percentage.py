"""percentage: rate x the meter's sum, plus a fixed fee per event (DESIGN §5).

Payment volume, revenue share: 2.9% of 12,000.00 + 0.30 x 400 events = 468.00.
`free_units` is an amount of the sum exempt from the rate and `free_events` a
number of events exempt from the fixed fee; both are counted from the start of
the period and carry across price segments (see free_units.py), like Lago's
"free units per total aggregation" and "free units per events".

The fixed fee needs the segment's event count; pricing never reads the store,
so the caller passes it. A negative sum (refunds exceeding payments) is priced
linearly when no free amount is set, the one case where it has a meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import fmt, mul, total
from meterline.pricing.charges import ZERO, Percentage
from meterline.pricing.explanation import Priced, grouped, percent_text, price_text
from meterline.pricing.free_units import billable


@dataclass(frozen=True)
class PercentagePosition:
    """How much of the period's sum and events earlier segments priced."""

    units: Decimal = ZERO
    events: int = 0


def price_percentage(
    charge: Percentage,
    amount: Decimal,
    events: int | None,
    currency: Currency,
    position: PercentagePosition | None = None,
) -> Priced:
    """Price one segment's sum (`amount`) and event count after `position`."""
    position = position or PercentagePosition()
    if charge.fixed_fee and events is None:
        raise ValueError(f"charge {charge.code}: a fixed fee per event needs the event count")
    if charge.free_units and amount < 0:
        raise ValueError(f"charge {charge.code}: free_units cannot apply to a negative sum")
    if events is not None and events < 0:
        raise ValueError("an event count cannot be negative")
    rated = billable(amount, position.units, charge.free_units) if charge.free_units else amount
    n = events or 0
    fee_events = int(billable(Decimal(n), Decimal(position.events), Decimal(charge.free_events)))
    terms = [f"{percent_text(charge.rate)} x {grouped(rated)}"]
    if rated != amount:
        terms[0] += f" ({grouped(amount - rated)} free)"
    parts = [mul(charge.rate, rated)]
    if charge.fixed_fee:
        fee_text = f"{price_text(charge.fixed_fee, currency)} x {grouped(fee_events)} events"
        if fee_events != n:
            fee_text += f" ({grouped(n - fee_events)} free)"
        terms.append(fee_text)
        parts.append(mul(charge.fixed_fee, Decimal(fee_events)))
    pricing = [("rate", fmt(charge.rate)), ("rated_amount", fmt(rated))]
    if charge.fixed_fee:
        pricing += [("fixed_fee", fmt(charge.fixed_fee)), ("fee_events", str(fee_events))]
    if events is not None:
        pricing.append(("events", str(n)))
    return Priced(amount=total(parts), terms=tuple(terms), pricing=tuple(pricing))


def advance(
    position: PercentagePosition, amount: Decimal, events: int | None
) -> PercentagePosition:
    return PercentagePosition(position.units + amount, position.events + (events or 0))
