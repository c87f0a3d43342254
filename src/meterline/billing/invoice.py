"""Assembling an invoice body from rated charges (DESIGN §6, §7).

Lines: one per charge and dimension group, then flat fees, then the minimum
spend true-up or the maximum spend cap (a negative line), per subscription;
then the customer's coupons (negative lines, before tax: billing/coupons.py). Each line is rounded once by rating;
subtotal = sum of rounded lines; tax = round(subtotal x rate); credit grants are
applied in the order of billing/credits.py; total = subtotal + tax - credits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from msgspec import structs

from meterline.billing import body as typed
from meterline.billing.advance import advance_lines, segments_after
from meterline.billing.coupons import COUPON_MODEL, apply_coupons
from meterline.billing.credits import Grant, GrantKind, GrantState, Source, consume
from meterline.billing.customers import Customer, Subscription, TrialUsage
from meterline.billing.document import Kind
from meterline.billing.periods import Period
from meterline.billing.usage import ADDITIVE, GroupUsage
from meterline.domain.decimals import exact_sum
from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import Rounding, money_str, round_money
from meterline.domain.timestamps import format_us
from meterline.metering import decode_dimensions, dimensions_dict
from meterline.pricing.charges import Charge, Flat, Package, PerUnit
from meterline.pricing.maximum import MAXIMUM_SPEND_CODE
from meterline.pricing.minimum import MINIMUM_SPEND_CODE
from meterline.pricing.pricebook import PriceBook, Segment
from meterline.pricing.rating import (
    RatedCharge,
    SegmentUsage,
    rate_additive,
    rate_flat,
    rate_maximum_spend,
    rate_minimum_spend,
    rate_non_additive,
)


@dataclass(frozen=True)
class SubscriptionUsage:
    subscription: Subscription
    book: PriceBook
    span: tuple[int, int]
    segments: tuple[Segment, ...]
    usage: dict[tuple[str, str], GroupUsage]


def _charges(segments: Sequence[Segment]) -> list[Charge]:
    """Charges in effect in any segment, in first-seen order (the line order)."""
    seen: dict[str, Charge] = {}
    for seg in segments:
        for charge in seg.version.charges:
            seen.setdefault(charge.code, charge)
    return list(seen.values())


def _dims_text(dims: dict[str, str | None]) -> str:
    return ", ".join(f"{k}={'(none)' if v is None else v}" for k, v in dims.items())


def _line(
    rated: RatedCharge,
    book: PriceBook,
    description: str,
    dims: dict[str, str | None],
    unit_price: Decimal | None,
    provenance: typed.Usage | None,
) -> typed.Line:
    """A line, numbered 0 until the body is assembled."""
    return typed.Line(
        line=0,
        charge=rated.charge,
        description=description,
        price_book=book.code,
        model=str(rated.model),
        meter=rated.meter,
        dimensions=dims,
        quantity=rated.quantity,
        unit_price=unit_price,
        amount=rated.amount,
        formula=rated.explanation.formula,
        explanation=typed.explanation_of(rated.explanation),
        usage=provenance,
    )


def _unit_price(charge: Charge, segments: Sequence[Segment]) -> Decimal | None:
    """A single unit price to print, only where one exists (per unit, package)."""
    prices = set()
    for seg in segments:
        c = seg.version.charge(charge.code)
        if isinstance(c, PerUnit):
            prices.add(c.unit_price)
        elif isinstance(c, Package):
            prices.add(c.package_price)
        elif c is not None:
            return None
    return prices.pop() if len(prices) == 1 else None


def subscription_lines(
    su: SubscriptionUsage, period: Period, timezone: str = "UTC", known_at: int | None = None
) -> list[typed.Line]:
    book, segments = su.book, su.segments
    lines: list[typed.Line] = []
    usage_amounts: list[Decimal] = []
    flat: list[typed.Line] = []
    trial_end = su.subscription.trial_end(timezone)
    # Flat fees are not billed for the trial (prorated): only the time after it counts.
    paid = segments_after(segments, trial_end)
    free_usage = trial_end is not None and su.subscription.trial_usage is TrialUsage.FREE
    for charge in _charges(segments):
        if isinstance(charge, Flat) and charge.in_advance:
            continue  # billed ahead: advance_lines below
        if isinstance(charge, Flat):
            if any(s.version.charge(charge.code) for s in paid):
                rated = rate_flat(book, charge.code, period.start, period.end, paid)
                flat.append(_line(rated, book, f"{charge.code} (flat fee)", {}, None, None))
            continue
        groups = sorted(
            (g for (m, _), g in su.usage.items() if m == charge.meter), key=lambda g: g.dims
        )
        for g in groups:
            if g.meter.aggregation in ADDITIVE:
                usage = [
                    SegmentUsage(s, q, n)
                    for s, q, n in zip(
                        segments, g.segment_quantities(), g.segment_event_counts(), strict=True
                    )
                ]
                if free_usage:
                    usage = [_trial_free(u, trial_end) for u in usage]
                rated = rate_additive(book, charge.code, usage)
                if free_usage and trial_end is not None and trial_end > segments[0].start:
                    rated = _with_note(
                        rated, f"trial until {format_us(trial_end)}: usage in it is free"
                    )
            else:
                rated = rate_non_additive(book, charge.code, segments, g.period_quantity())
            usage_amounts.append(rated.amount)
            dims = dimensions_dict(g.meter, decode_dimensions(g.dims))
            description = f"{charge.code}: {g.meter.code}" + (
                f" ({_dims_text(dims)})" if dims else ""
            )
            lines.append(
                _line(rated, book, description, dims, _unit_price(charge, segments), g.usage())
            )
    lines.extend(flat)
    if known_at is not None:
        lines.extend(_advance(su, period, timezone, known_at))
    bounds = (period.start, period.end)
    minimum = rate_minimum_spend(book, segments, usage_amounts, bounds)
    if minimum is not None:
        lines.append(_line(minimum, book, "minimum spend true-up", {}, None, None))
    maximum = rate_maximum_spend(book, segments, usage_amounts, bounds)
    if maximum is not None:
        lines.append(_line(maximum, book, "maximum spend cap", {}, None, None))
    return lines


def _advance(
    su: SubscriptionUsage, period: Period, timezone: str, known_at: int
) -> list[typed.Line]:
    """In-advance flat fees: the next period's, the first period's, unused time back."""
    if not any(isinstance(c, Flat) and c.in_advance for v in su.book.versions for c in v.charges):
        return []  # every line below comes from an in-advance fee of one of the book's versions
    next_period = su.subscription.cycle(timezone).period_of(period.end)
    out = []
    for a in advance_lines(
        su.subscription, su.book, period, next_period, su.segments, known_at, timezone
    ):
        line = _line(a.rated, su.book, a.description, a.dimensions, None, None)
        if a.negate and line.explanation is not None:
            x = a.rated.explanation
            amount = -a.rated.amount
            formula = f"-({x.derivation}) = {money_str(amount, su.book.currency)}"
            explanation = structs.replace(
                line.explanation,
                amount=amount,
                exact_amount=-a.rated.exact_amount,
                formula=formula,
                notes=(*line.explanation.notes, a.description + ": billed in advance"),
            )
            line = structs.replace(
                line, amount=amount, model="flat", formula=formula, explanation=explanation
            )
        out.append(line)
    return out


def _trial_free(u: SegmentUsage, trial_end: int | None) -> SegmentUsage:
    """`trial_usage: free`: a segment inside the trial is billed as no usage."""
    if trial_end is not None and u.segment.end <= trial_end:
        return SegmentUsage(u.segment, Decimal(0), 0)
    return u


def _with_note(rated: RatedCharge, note: str) -> RatedCharge:
    x = replace(rated.explanation, notes=(*rated.explanation.notes, note))
    return replace(rated, explanation=x)


# Lines that belong to "all usage" for a coupon besides metered lines: the spend limits.
_USAGE_ADJUSTMENTS = frozenset({MINIMUM_SPEND_CODE, MAXIMUM_SPEND_CODE})


def coupon_lines(
    customer: Customer,
    period: Period,
    lines: Sequence[typed.Line],
    rounding: Rounding,
    subs: Sequence[SubscriptionUsage],
) -> list[typed.Line]:
    """Negative coupon lines, after minimum and maximum and before tax (DESIGN §7)."""
    if not customer.coupons:
        return []  # nothing to apply: skip finding the period's cycle
    cycle = next(
        (c for c in customer.cycles() if c.period_of(period.start) == period),
        customer.cycles()[0],
    )
    live = [c for c in customer.coupons if c.applies(cycle, period)]
    book = subs[-1].book.code if subs else ""
    out = []
    for d in apply_coupons(live, lines, _USAGE_ADJUSTMENTS, customer.currency, rounding):
        out.append(
            typed.Line(
                line=0,
                charge=d.coupon.line_code,
                description=f"coupon {d.coupon.code}",
                price_book=book,
                model=COUPON_MODEL,
                meter=None,
                dimensions={},
                quantity=None,
                unit_price=None,
                amount=d.amount,
                formula=d.formula,
                explanation=d.explanation(customer.currency, rounding),
                usage=None,
            )
        )
    return out


def catalog_grants(customer: Customer) -> list[Grant]:
    """The customer's catalog `credits` list as grants (billing/credits.py)."""
    return [
        Grant(
            c.id,
            customer.id,
            customer.currency.code,
            c.amount,
            c.granted_at,
            c.priority,
            c.expires_at,
            None,
            GrantKind(c.kind),
            Source.CATALOG,
        )
        for c in customer.credits
    ]


def assemble(
    customer: Customer,
    period: Period,
    subs: Sequence[SubscriptionUsage],
    cutoff: int,
    grants: Sequence[GrantState],
) -> typed.Body:
    """The invoice body: deterministic given the store as known at `cutoff`.

    `grants`: every credit grant of the customer with its history as known at
    `cutoff` (catalog credits included; see `catalog_grants`)."""
    currency = customer.currency
    for su in subs:
        if su.book.currency != currency:
            raise MeterlineError(
                ErrorCode.INVALID_CATALOG,
                f"customer {customer.id} is billed in {currency.code} but price book "
                f"{su.book.code} is in {su.book.currency.code}",
            )
    rounding = subs[-1].book.rounding if subs else Rounding.HALF_UP
    unnumbered: list[typed.Line] = []
    for su in subs:
        unnumbered.extend(subscription_lines(su, period, customer.timezone, cutoff))
    unnumbered.extend(coupon_lines(customer, period, unnumbered, rounding, subs))
    lines = tuple(structs.replace(x, line=i) for i, x in enumerate(unnumbered, start=1))
    subtotal = exact_sum([line.amount for line in lines])
    tax = round_money(subtotal * customer.tax_rate, currency, rounding)
    credits = consume(grants, subtotal + tax, period.start, period.end)
    credited = exact_sum([amount for _, amount in credits])
    versions = sorted(
        {
            (
                su.book.code,
                seg.version.label,
                format_us(seg.version.effective_from),
                seg.version.content_hash,
            )
            for su in subs
            for seg in su.segments
        }
    )
    return typed.Body(
        kind=str(Kind.INVOICE),
        customer_id=customer.id,
        customer_name=customer.name,
        currency=currency.code,
        timezone=customer.timezone,
        period=typed.Period(**period.to_dict()),
        subscriptions=tuple(su.subscription.typed() for su in subs),
        lines=lines,
        subtotal=subtotal,
        tax_rate=customer.tax_rate,
        tax=tax,
        credits=tuple(typed.CreditApplied(grant=g, amount=a) for g, a in credits),
        credits_applied=credited,
        total=subtotal + tax - credited,
        corrects=None,
        reasons=(),
        cutoff_seq=cutoff,
        price_versions=tuple(
            typed.PriceVersion(price_book=b, version=v, effective_from=e, content_hash=h)
            for b, v, e, h in versions
        ),
    )
