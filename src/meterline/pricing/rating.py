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
from dataclasses import dataclass
from decimal import Decimal

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.money import round_money
from meterline.domain.timestamps import format_us
from meterline.pricing._exact import total
from meterline.pricing.charges import (
    ZERO,
    ChargeModel,
    Flat,
    Graduated,
    Package,
    PerUnit,
    UsageCharge,
    Volume,
)
from meterline.pricing.explanation import Basis, Explanation, Priced, SegmentLine, version_refs
from meterline.pricing.flat import price_flat, price_flat_unprorated, prorated_total
from meterline.pricing.graduated import price_graduated
from meterline.pricing.minimum import MINIMUM_SPEND_CODE, true_up
from meterline.pricing.package import price_package
from meterline.pricing.per_unit import price_per_unit
from meterline.pricing.pricebook import PriceBook, Segment
from meterline.pricing.volume import price_volume


@dataclass(frozen=True)
class SegmentUsage:
    """The quantity an additive meter measured in one segment, by event time."""

    segment: Segment
    quantity: Decimal


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
    period_total = total(u.quantity for u, _ in present)
    last_volume = max((i for i, (_, c) in enumerate(present) if isinstance(c, Volume)), default=-1)
    lines: list[SegmentLine] = []
    position, fees = ZERO, frozenset[int]()
    for index, (u, charge) in enumerate(present):
        _check_quantity(charge, u)
        match charge:
            case Graduated():
                result = price_graduated(charge, u.quantity, book.currency, position, fees)
                priced, fees = result.priced, result.fees_charged
            case Volume():
                with_fee = index == last_volume
                priced = price_volume(charge, u.quantity, period_total, book.currency, with_fee)
            case Package():
                priced = price_package(charge, u.quantity, book.currency)
            case PerUnit():
                priced = price_per_unit(charge, u.quantity, book.currency)
        position += u.quantity
        lines.append(_line(u.segment, u.quantity, priced))
    last = present[-1][1]
    return _finish(book, code, last.model, lines, basis, notes, last.meter, period_total)


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
    book: PriceBook, segments: Sequence[Segment], usage_amounts: Sequence[Decimal]
) -> RatedCharge | None:
    """The true-up line, or None when there is no minimum or usage reaches it.

    `usage_amounts` are the ROUNDED amounts of the period's usage lines.
    """
    _check_segments(book, segments)
    version = segments[-1].version
    if version.minimum_spend is None:
        return None
    priced = true_up(version.minimum_spend, total(usage_amounts), book.currency)
    if priced is None:
        return None
    whole = Segment(segments[0].start, segments[-1].end, version)
    note = f"minimum spend of version {version.label}, in effect at the end of the period"
    line = _line(whole, None, priced)
    return _finish(
        book, MINIMUM_SPEND_CODE, MINIMUM_SPEND_CODE, [line], Basis.END_OF_PERIOD, (note,)
    )


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


def _check_quantity(charge: UsageCharge, usage: SegmentUsage) -> None:
    """Tiers and packages have no meaning for negative quantities; per_unit does."""
    if usage.quantity < 0 and not isinstance(charge, PerUnit):
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
