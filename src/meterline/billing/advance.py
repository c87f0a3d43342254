"""Flat fees billed in advance (DESIGN §7): what invoice P bills ahead and gives back.

An `in_advance: true` flat fee is billed on the invoice that opens the period it
covers, which is the invoice of the period just ended (its usage is billed in
arrears on the same invoice). So invoice P carries:

- the fee for the next period P+1, for the subscription's time in it from its
  start (an end inside P+1 is not looked at: it is credited on invoice P+1);
  nothing when the subscription ends at or before P+1 starts;
- in the subscription's first period, the fee for P itself (no earlier invoice
  opened it), for its actual active time;
- when the subscription ends inside P (and P was billed ahead by invoice P-1),
  "unused time on <plan>": minus the fee for [end, P.end) (not for a fee with
  `prorate: false`, which is owed whole).

Each depends only on the facts (subscription dates, versions), never on when
they became known, so re-rating gives the same lines and corrections stay exact.
A trial's time is not billed (trial_days, DESIGN §7).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from meterline.billing.customers import Subscription
from meterline.billing.periods import Period
from meterline.pricing.charges import Flat
from meterline.pricing.pricebook import PriceBook, Segment
from meterline.pricing.rating import RatedCharge, rate_flat


@dataclass(frozen=True)
class AdvanceLine:
    rated: RatedCharge
    description: str
    dimensions: dict[str, str | None]
    negate: bool = False  # an unused-time credit


def segments_after(segments: Sequence[Segment], at: int | None) -> tuple[Segment, ...]:
    """The part of the segments from `at` on (all of them for None): a trial is not billed."""
    if at is None:
        return tuple(segments)
    return tuple(Segment(max(s.start, at), s.end, s.version) for s in segments if s.end > at)


def advance_lines(
    sub: Subscription,
    book: PriceBook,
    period: Period,
    next_period: Period,
    segments: Sequence[Segment],
    known_at: int,
    timezone: str,
) -> list[AdvanceLine]:
    """The in-advance lines of one subscription on the invoice of `period`."""
    trial_end = sub.trial_end(timezone)
    out: list[AdvanceLine] = []
    codes = [c.code for c in _advance_charges(book, segments)]
    first = sub.start >= period.start
    if first:
        paid = segments_after(segments, trial_end)
        for code in codes:
            if any(s.version.charge(code) for s in paid):
                rated = rate_flat(book, code, period.start, period.end, paid)
                out.append(AdvanceLine(rated, f"{code} (in advance, {period.label})", {}))
    if sub.end is None or sub.end > next_period.start:
        lo = max(next_period.start, sub.start)
        ahead = segments_after(book.segments(lo, next_period.end, known_at), trial_end)
        for code in [c.code for c in _advance_charges(book, ahead)]:
            rated = rate_flat(book, code, next_period.start, next_period.end, ahead)
            dims: dict[str, str | None] = {"covers": next_period.label}
            out.append(AdvanceLine(rated, f"{code} (in advance, {next_period.label})", dims))
    if not first and sub.end is not None and period.start < sub.end < period.end:
        unused = segments_after(
            book.segments(period.start, period.end, known_at), max(sub.end, trial_end or 0)
        )
        for code in [c.code for c in _advance_charges(book, unused) if c.prorate]:
            rated = rate_flat(book, code, period.start, period.end, unused)
            dims = {"unused": period.label}
            out.append(AdvanceLine(rated, f"unused time on {book.code} ({code})", dims, True))
    return out


def _advance_charges(book: PriceBook, segments: Sequence[Segment]) -> list[Flat]:
    seen: dict[str, Flat] = {}
    for s in segments:
        for c in s.version.charges:
            if isinstance(c, Flat) and c.in_advance:
                seen.setdefault(c.code, c)
    del book
    return list(seen.values())
