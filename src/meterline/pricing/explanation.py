"""Explanations: every rated amount carries the numbers and words that derive it.

`to_dict()` gives plain, deterministic data (str, int, list, dict) ready for
canonical JSON: quantities, prices and exact sub-amounts as canonical decimal
text ("0.015" stays "0.015"), rounded money with exactly the minor digits
(DESIGN §6). Absent values (an unbounded tier's up_to, a flat charge's meter)
are left out rather than written as null.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

from meterline.domain.money import Currency, Rounding, money_str
from meterline.domain.timestamps import (
    US_PER_DAY,
    US_PER_HOUR,
    US_PER_MINUTE,
    US_PER_SECOND,
    format_us,
)
from meterline.pricing._exact import fmt


def _group(text: str) -> str:
    """Thousands separators on the whole part of plain decimal text."""
    sign = "-" if text.startswith("-") else ""
    whole, dot, fraction = text.lstrip("-").partition(".")
    return f"{sign}{int(whole):,}{dot}{fraction}"


def grouped(value: Decimal | int) -> str:
    """Canonical decimal text with thousands separators: 12500 -> "12,500"."""
    return _group(fmt(value))


def price_text(value: Decimal, currency: Currency) -> str:
    """An exact price for people: padded to the minor digits, never cut.

    0.1 USD -> "0.10", 0.015 -> "0.015", 1500 JPY -> "1,500": padding adds
    only zeros, so the text is still the exact price.
    """
    text = fmt(value)
    if len(text.partition(".")[2]) < currency.minor_digits:
        text = f"{Decimal(text):.{currency.minor_digits}f}"
    return _group(text)


def percent_text(rate: Decimal) -> str:
    """A rate as a percentage, exact: 0.029 -> "2.9%", 0.00125 -> "0.125%"."""
    return f"{_group(fmt(rate.scaleb(2)))}%"


def money_text(amount: Decimal, currency: Currency) -> str:
    """Rounded money with grouping, for formulas: "10,055.00"."""
    return _group(money_str(amount, currency))


_DURATION_UNITS = (
    (US_PER_DAY, "day"),
    (US_PER_HOUR, "hour"),
    (US_PER_MINUTE, "minute"),
    (US_PER_SECOND, "second"),
    (1, "microsecond"),
)


def durations_text(part_us: int, whole_us: int) -> tuple[str, str]:
    """Two durations in the largest unit that divides both: ("16 days", "31 days")."""
    for size, unit in _DURATION_UNITS:
        if part_us % size == 0 and whole_us % size == 0:
            return _plural(part_us // size, unit), _plural(whole_us // size, unit)
    raise AssertionError("unreachable: 1 microsecond divides every duration")


def _plural(count: int, unit: str) -> str:
    return f"{count:,} {unit}{'' if count == 1 else 's'}"


class Basis(StrEnum):
    """Which prices a line was rated with, and why."""

    SEGMENTS = "segments"  # additive usage split by the version in effect (DESIGN §5)
    END_OF_PERIOD = "end_of_period"  # non-additive usage, unprorated flat fee, minimum spend
    PRORATED = "prorated"  # flat fee x active time / period time, per version


@dataclass(frozen=True)
class TierLine:
    """One tier's share of a segment: the units it received and what they cost, exact."""

    tier: int  # 1-based position in the version's tier list
    after: Decimal  # the tier holds units above this (exclusive lower bound)
    up_to: Decimal | None
    units: Decimal
    unit_price: Decimal
    flat_fee: Decimal  # the flat fee charged in this segment (0 when charged earlier)
    amount: Decimal

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tier": self.tier,
            "from": fmt(self.after),
            "units": fmt(self.units),
            "unit_price": fmt(self.unit_price),
            "flat_fee": fmt(self.flat_fee),
            "amount": fmt(self.amount),
        }
        if self.up_to is not None:
            data["up_to"] = fmt(self.up_to)
        return data


@dataclass(frozen=True)
class Priced:
    """What one model computes for one segment: the exact amount and its terms in words."""

    amount: Decimal
    terms: tuple[str, ...]  # "1,000 x 0.02", "10.00 (tier 2 flat fee)"; joined by " + "
    tiers: tuple[TierLine, ...] = ()
    pricing: tuple[tuple[str, str], ...] = ()  # the model's parameters, canonical text
    note: str = ""


@dataclass(frozen=True)
class VersionRef:
    label: str
    effective_from: int
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.label,
            "effective_from": format_us(self.effective_from),
            "content_hash": self.content_hash,
        }


@dataclass(frozen=True)
class SegmentLine:
    """One [start, end) piece of the period priced with one version."""

    start: int
    end: int
    version: VersionRef
    quantity: Decimal | None  # None for flat fees, which have no quantity
    priced: Priced

    @property
    def formula(self) -> str:
        return f"{_segment_terms(self, labelled=False)} = {grouped(self.priced.amount)}"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "start": format_us(self.start),
            "end": format_us(self.end),
            "version": self.version.label,
            "amount": fmt(self.priced.amount),
            "formula": self.formula,
        }
        if self.quantity is not None:
            data["quantity"] = fmt(self.quantity)
        if self.priced.tiers:
            data["tiers"] = [tier.to_dict() for tier in self.priced.tiers]
        if self.priced.pricing:
            data["pricing"] = dict(self.priced.pricing)
        if self.priced.note:
            data["note"] = self.priced.note
        return data


@dataclass(frozen=True)
class Explanation:
    """Why a line costs what it costs: model, prices, segments, formula and rounding."""

    charge: str
    model: str
    meter: str | None
    price_book: str
    currency: Currency
    rounding: Rounding
    basis: Basis
    versions: tuple[VersionRef, ...]
    quantity: Decimal | None
    segments: tuple[SegmentLine, ...]
    exact_amount: Decimal
    amount: Decimal
    notes: tuple[str, ...] = ()

    @property
    def formula(self) -> str:
        """The derivation in words, ending with the rounded amount.

        One segment: "1,000 x 0.02 + 9,000 x 0.015 + 2,500 x 0.01 = 180.00".
        Several: each segment's terms behind its version label,
        "v1: 800 x 0.02 + v2: 200 x 0.03 + 500 x 0.02 = 32.00".
        """
        return f"{self.derivation} = {money_text(self.amount, self.currency)}"

    @property
    def derivation(self) -> str:
        labelled = len(self.segments) > 1
        parts = [_segment_terms(segment, labelled) for segment in self.segments]
        return " + ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "charge": self.charge,
            "model": self.model,
            "price_book": self.price_book,
            "currency": self.currency.code,
            "rounding": self.rounding.value,
            "basis": self.basis.value,
            "versions": [version.to_dict() for version in self.versions],
            "segments": [segment.to_dict() for segment in self.segments],
            "exact_amount": fmt(self.exact_amount),
            "amount": money_str(self.amount, self.currency),
            "formula": self.formula,
            "notes": list(self.notes),
        }
        if self.meter is not None:
            data["meter"] = self.meter
        if self.quantity is not None:
            data["quantity"] = fmt(self.quantity)
        return data


def _segment_terms(segment: SegmentLine, labelled: bool) -> str:
    terms = " + ".join(segment.priced.terms) or _empty_terms(segment)
    return f"{segment.version.label}: {terms}" if labelled else terms


def _empty_terms(segment: SegmentLine) -> str:
    if segment.quantity is None:
        return "0"
    return f"{grouped(segment.quantity)} units"


def version_refs(segments: Sequence[SegmentLine]) -> tuple[VersionRef, ...]:
    """The distinct versions of the segments, in order of first use."""
    return tuple(dict.fromkeys(segment.version for segment in segments))
