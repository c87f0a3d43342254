"""Small builders for the per-model table tests: a book, its segments, rated lines."""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.money import Currency, Rounding
from meterline.domain.timestamps import parse_rfc3339
from meterline.pricing.charges import Charge
from meterline.pricing.pricebook import PriceBook, Segment, VersionSpec
from meterline.pricing.rating import RatedCharge, SegmentUsage, rate_additive

USD = Currency("USD")
JAN = parse_rfc3339("2024-01-01T00:00:00Z")
MID = parse_rfc3339("2024-01-17T00:00:00Z")
FEB = parse_rfc3339("2024-02-01T00:00:00Z")


def book(*versions: tuple[Charge, ...], currency: Currency = USD) -> PriceBook:
    """v1 from Jan 1 and, when given, v2 from Jan 17."""
    starts = (JAN, MID)
    return PriceBook(
        "book",
        currency,
        Rounding.HALF_UP,
        tuple(
            VersionSpec(label=f"v{i + 1}", effective_from=starts[i], charges=charges).recorded(
                i + 1
            )
            for i, charges in enumerate(versions)
        ),
    )


def segments(b: PriceBook) -> tuple[Segment, ...]:
    return b.segments(JAN, FEB, 100)


def rate(
    code: str, *versions: tuple[Charge, ...], usage: tuple[tuple[str, int | None], ...]
) -> RatedCharge:
    """Rate `code` with one (quantity, events) pair per version's segment."""
    b = book(*versions)
    segs = segments(b)
    return rate_additive(
        b,
        code,
        [SegmentUsage(s, Decimal(q), events) for s, (q, events) in zip(segs, usage, strict=True)],
    )


def amount(rated: RatedCharge) -> str:
    return str(rated.amount)
