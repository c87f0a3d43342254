"""Rating: one charge, one dimension group, one billing period -> one line (DESIGN §5, §6).

The invoicing layer resolves segments with `PriceBook.segments` over the
subscription's active time in the period and measures the usage; rating turns
them into an exact amount, the amount rounded ONCE to the currency's minor unit
with the book's rounding, and the explanation. Tier sub-amounts and unit prices
stay exact in the explanation.

"The version in effect at the end of the period" is the version of the last
segment, i.e. the one in effect at the last billed microsecond (end - 1):
a version taking effect exactly at the period end belongs to the next period,
and a subscription that ended mid-period is never priced with a version that
took effect after it ended.

A charge is identified by its code across versions. A segment whose version
does not define the charge contributes nothing to it and is named in the
notes; its units do not advance the graduated tier position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from types import UnionType

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import round_money
from meterline.domain.timestamps import format_us
from meterline.pricing._exact import sub, total
from meterline.pricing.charges import (
    ZERO,
    ChargeModel,
    Dynamic,
    Flat,
    Graduated,
    GraduatedPercentage,
    Package,
    Percentage,
    PerUnit,
    UsageCharge,
    Volume,
)
from meterline.pricing.conversion import convert, describe, pricing_pairs
from meterline.pricing.dynamic import price_dynamic
from meterline.pricing.explanation import Basis, Explanation, Priced, SegmentLine, version_refs
from meterline.pricing.flat import price_flat, price_flat_unprorated, prorated_total
from meterline.pricing.graduated import price_graduated
from meterline.pricing.graduated_percentage import price_graduated_percentage
from meterline.pricing.maximum import MAXIMUM_SPEND_CODE, cap
from meterline.pricing.minimum import MINIMUM_SPEND_CODE, true_up
from meterline.pricing.package import price_package
from meterline.pricing.per_unit import price_per_unit
from meterline.pricing.percentage import PercentagePosition, price_percentage
from meterline.pricing.percentage import advance as advance_percentage
from meterline.pricing.pricebook import PriceBook, Segment
from meterline.pricing.volume import price_volume


@dataclass(frozen=True)
class SegmentUsage:
    """The quantity an additive meter measured in one segment, by event time.

    `events` is the number of events behind it; only models that charge per
    event (percentage with a fixed_fee) need it, and rating never reads the store.
    """

    segment: Segment
    quantity: Decimal
    events: int | None = None


@dataclass(frozen=True)
class RatedCharge:
    """A finished line: exact amount, the amount rounded once, and why."""

    charge: str
    model: str
    meter: str | None
    quantity: Decimal | None  # None for flat fees and the minimum-spend true-up
    exact_amount: Decimal
    amount: Decimal
    explanation: Explanation


def rate_additive(book: PriceBook, charge_code: str, usage: Sequence[SegmentUsage]) -> RatedCharge:
    """Rate additive usage (count, sum) measured per segment.

    Graduated tiers carry their position across segments, volume selects its
    tier by the period total, package and per_unit price each segment alone.
    """
    _check_segments(book, [u.segment for u in usage])
    notes = _absent_notes(charge_code, [u.segment for u in usage])
    return _rate_usage(book, charge_code, usage, Basis.SEGMENTS, notes)


def rate_non_additive(
    book: PriceBook, charge_code: str, segments: Sequence[Segment], quantity: Decimal
) -> RatedCharge:
    """Rate a non-additive period quantity (min, max, unique_count, latest).

    Such a quantity cannot be split by event time, so the whole of it is priced
    with the version in effect at the end of the period, as one segment.
    """
    _check_segments(book, segments)
    end = segments[-1].version
    if _usage_charge(segments[-1], charge_code) is None:
        raise ValueError(f"version {end.label} does not define charge {charge_code!r}")
    whole = SegmentUsage(Segment(segments[0].start, segments[-1].end, end), quantity)
    note = (
        f"non-additive usage is priced with version {end.label} "
        f"(effective {format_us(end.effective_from)}), in effect at the end of the period"
    )
    return _rate_usage(book, charge_code, [whole], Basis.END_OF_PERIOD, (note,))


def _rate_usage(
    book: PriceBook,
    code: str,
    usage: Sequence[SegmentUsage],
    basis: Basis,
    notes: tuple[str, ...],
) -> RatedCharge:
    present = _with_charge(usage, code)
    quantities, conversion_notes = _converted(present)
    period_total = total(quantities)
    last_volume = _last_index(present, Volume)
    last_tiered = _last_index(present, Graduated | GraduatedPercentage)
    lines: list[SegmentLine] = []
    position, fees = ZERO, frozenset[int]()
    pct = PercentagePosition()
    for index, ((u, charge), quantity) in enumerate(zip(present, quantities, strict=True)):
        _check_quantity(charge, u, quantity)
        zero_usage = period_total == 0 and index == last_tiered
        match charge:
            case Graduated():
                result = price_graduated(
                    charge, quantity, book.currency, position, fees, zero_usage
                )
                priced, fees = result.priced, result.fees_charged
            case GraduatedPercentage():
                result = price_graduated_percentage(
                    charge, quantity, book.currency, position, fees, zero_usage
                )
                priced, fees = result.priced, result.fees_charged
            case Volume():
                with_fee = index == last_volume
                priced = price_volume(charge, quantity, period_total, book.currency, with_fee)
            case Package():
                priced = price_package(charge, quantity, book.currency, position)
            case PerUnit():
                priced = price_per_unit(charge, quantity, book.currency, position)
            case Percentage():
                priced = price_percentage(charge, quantity, u.events, book.currency, pct)
                pct = advance_percentage(pct, quantity, u.events)
            case Dynamic():
                priced = price_dynamic(charge, quantity, book.currency)
        if charge.conversion is not None:
            pairs = pricing_pairs(u.quantity, quantity)
            priced = replace(priced, pricing=pairs + priced.pricing, note=conversion_notes[index])
        position += quantity
        lines.append(_line(u.segment, quantity, priced))
    last = present[-1][1]
    notes = notes + tuple(n for n in dict.fromkeys(conversion_notes) if n)
    return _finish(book, code, last.model, lines, basis, notes, last.meter, period_total)


def _last_index(present: Sequence[tuple[SegmentUsage, UsageCharge]], kind: type | UnionType) -> int:
    return max((i for i, (_, c) in enumerate(present) if isinstance(c, kind)), default=-1)


def _converted(
    present: Sequence[tuple[SegmentUsage, UsageCharge]],
) -> tuple[list[Decimal], list[str]]:
    """Each segment's quantity in the price's unit, and the words for it.

    A conversion rounds the RUNNING total of the metered quantity and a segment
    gets the difference, so the segments add up to the converted period total
    (conversion.py); a segment without a conversion keeps its metered quantity.
    """
    quantities: list[Decimal] = []
    words: list[str] = []
    running = ZERO
    for u, charge in present:
        conv = charge.conversion
        if conv is None:
            quantities.append(u.quantity)
            words.append("")
        else:
            before, after = convert(running, conv), convert(running + u.quantity, conv)
            quantities.append(sub(after, before))
            words.append(describe(u.quantity, sub(after, before), conv))
        running += u.quantity
    return quantities, words


def _with_charge(
    usage: Sequence[SegmentUsage], code: str
) -> list[tuple[SegmentUsage, UsageCharge]]:
    """The segments whose version defines the charge, each with its definition."""
    present = [(u, c) for u in usage if (c := _usage_charge(u.segment, code)) is not None]
    if not present:
        raise ValueError(f"no version in these segments defines charge {code!r}")
    return present


def rate_flat(
    book: PriceBook,
    charge_code: str,
    period_start: int,
    period_end: int,
    segments: Sequence[Segment],
) -> RatedCharge:
    """Rate a flat fee over the active time (`segments`) of the period [start, end).

    Each segment's share is its version's amount x segment time / period time;
    with `prorate: false` on the charge in effect at the end of the active time,
    that version's full amount instead.
    """
    _check_segments(book, segments)
    if not period_start <= segments[0].start or segments[-1].end > period_end:
        raise ValueError("segments must lie within the billing period")
    present = [(s, c) for s in segments if (c := _flat_charge(s, charge_code))]
    if not present:
        raise ValueError(f"no version in these segments defines flat charge {charge_code!r}")
    end_segment, end_charge = present[-1]
    notes = _absent_notes(charge_code, segments)
    if not end_charge.prorate:
        whole = Segment(segments[0].start, end_segment.end, end_segment.version)
        line = _line(whole, None, price_flat_unprorated(end_charge, book.currency))
        return _finish(book, charge_code, ChargeModel.FLAT, [line], Basis.END_OF_PERIOD, notes)
    period_us = period_end - period_start
    lines = [
        _line(s, None, price_flat(charge, s.duration, period_us, book.currency))
        for s, charge in present
    ]
    exact_amount = prorated_total([(charge, s.duration) for s, charge in present], period_us)
    return _finish(
        book, charge_code, ChargeModel.FLAT, lines, Basis.PRORATED, notes, exact_amount=exact_amount
    )


def rate_minimum_spend(
    book: PriceBook,
    segments: Sequence[Segment],
    usage_amounts: Sequence[Decimal],
    period: tuple[int, int] | None = None,
) -> RatedCharge | None:
    """The true-up line, or None when there is no minimum or usage reaches it.

    `usage_amounts` are the ROUNDED amounts of the period's usage lines;
    `period` is the billing period [start, end): with it, the minimum is
    prorated by the active time of `segments` unless the version says
    `prorate: false` (without it, the segments are taken as the whole period).
    """
    _check_segments(book, segments)
    version = segments[-1].version
    if version.minimum_spend is None:
        return None
    active, whole = _active(segments, period)
    priced = true_up(
        version.minimum_spend,
        total(usage_amounts),
        book.currency,
        active,
        whole,
        version.minimum_prorate,
    )
    if priced is None:
        return None
    note = f"minimum spend of version {version.label}, in effect at the end of the period"
    return _spend_line(book, segments, MINIMUM_SPEND_CODE, priced, note)


def rate_maximum_spend(
    book: PriceBook,
    segments: Sequence[Segment],
    usage_amounts: Sequence[Decimal],
    period: tuple[int, int] | None = None,
) -> RatedCharge | None:
    """The cap adjustment (a negative line), or None when there is no maximum or
    usage stays within it. Same inputs and proration as `rate_minimum_spend`."""
    _check_segments(book, segments)
    version = segments[-1].version
    if version.maximum_spend is None:
        return None
    active, whole = _active(segments, period)
    priced = cap(
        version.maximum_spend,
        total(usage_amounts),
        book.currency,
        active,
        whole,
        version.maximum_prorate,
    )
    if priced is None:
        return None
    note = f"maximum spend of version {version.label}, in effect at the end of the period"
    return _spend_line(book, segments, MAXIMUM_SPEND_CODE, priced, note)


def _active(segments: Sequence[Segment], period: tuple[int, int] | None) -> tuple[int, int]:
    active = segments[-1].end - segments[0].start
    if period is None:
        return active, active
    if not period[0] <= segments[0].start or segments[-1].end > period[1]:
        raise ValueError("segments must lie within the billing period")
    return active, period[1] - period[0]


def _spend_line(
    book: PriceBook, segments: Sequence[Segment], code: str, priced: Priced, note: str
) -> RatedCharge:
    whole = Segment(segments[0].start, segments[-1].end, segments[-1].version)
    line = _line(whole, None, priced)
    return _finish(book, code, code, [line], Basis.END_OF_PERIOD, (note,))


def _usage_charge(segment: Segment, code: str) -> UsageCharge | None:
    charge = segment.version.charge(code)
    if isinstance(charge, Flat):
        raise ValueError(f"charge {code!r} is a flat fee: rate it with rate_flat")
    return charge


def _flat_charge(segment: Segment, code: str) -> Flat | None:
    charge = segment.version.charge(code)
    if charge is not None and not isinstance(charge, Flat):
        raise ValueError(f"charge {code!r} is metered: rate it with rate_additive")
    return charge


def _check_quantity(charge: UsageCharge, usage: SegmentUsage, quantity: Decimal) -> None:
    """Tiers, packages and free allowances have no meaning for negative quantities;
    linear models (per_unit, dynamic, percentage) without free units do."""
    linear = isinstance(charge, Dynamic) or (
        isinstance(charge, PerUnit | Percentage) and not charge.free_units
    )
    if quantity < 0 and not linear:
        raise MeterlineError(
            ErrorCode.INVALID_ARGUMENT,
            f"charge {charge.code} ({charge.model}) cannot price the negative quantity "
            f"{usage.quantity} measured from {format_us(usage.segment.start)} "
            f"to {format_us(usage.segment.end)}",
            charge=charge.code,
        )


def _check_segments(book: PriceBook, segments: Sequence[Segment]) -> None:
    """Segments must be non-empty, ordered, non-overlapping and of this book."""
    if not segments:
        raise ValueError("rating needs at least one segment")
    previous_end: int | None = None
    for segment in segments:
        if segment.start >= segment.end:
            raise ValueError(f"empty or inverted segment [{segment.start}, {segment.end})")
        if previous_end is not None and segment.start < previous_end:
            raise ValueError("segments must be in time order and must not overlap")
        if segment.version not in book.versions:
            raise ValueError(f"version {segment.version.label} is not in price book {book.code}")
        previous_end = segment.end


def _absent_notes(code: str, segments: Sequence[Segment]) -> tuple[str, ...]:
    return tuple(
        f"charge {code} is not in version {s.version.label} "
        f"({format_us(s.start)} to {format_us(s.end)}): nothing billed for that time"
        for s in segments
        if s.version.charge(code) is None
    )


def _line(segment: Segment, quantity: Decimal | None, priced: Priced) -> SegmentLine:
    return SegmentLine(segment.start, segment.end, segment.version.ref(), quantity, priced)


def _finish(
    book: PriceBook,
    code: str,
    model: str,
    lines: list[SegmentLine],
    basis: Basis,
    notes: tuple[str, ...],
    meter: str | None = None,
    quantity: Decimal | None = None,
    exact_amount: Decimal | None = None,
) -> RatedCharge:
    """Sum the exact segment amounts (unless given) and round once, at the end (DESIGN §6)."""
    if exact_amount is None:
        exact_amount = total(line.priced.amount for line in lines)
    model = str(model)  # plain text, not the enum, in documents
    amount = round_money(exact_amount, book.currency, book.rounding)
    explanation = Explanation(
        charge=code,
        model=model,
        meter=meter,
        price_book=book.code,
        currency=book.currency,
        rounding=book.rounding,
        basis=basis,
        versions=version_refs(lines),
        quantity=quantity,
        segments=tuple(lines),
        exact_amount=exact_amount,
        amount=amount,
        notes=notes,
    )
    return RatedCharge(code, model, meter, quantity, exact_amount, amount, explanation)
