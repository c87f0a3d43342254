"""The bitemporal usage index, as pure data and pure functions (DESIGN §4).

The index is append-only. Every change that reaches a bucket (a meter's
window, or a UTC day rollup of it) is one row tagged with the seq range of the
facts that caused it:

- ``add``: a partial state merged in (accepted events of one batch);
- ``sub``: a partial state taken out (a retraction, for count and sum only);
- ``set``: the bucket's whole state as known at the row's seq (a retraction
  that min, max, latest or unique_count cannot subtract, re-folded from raw
  events; or a meter applied after its events);
- ``cpt`` (checkpoint): a ``set`` caused by no fact, the fold of the rows
  <= its seq, appended when a read finds many rows since the last state, so
  later reads start from it (a bucket fed by many small batches stays cheap).

"Usage as known at K" of a bucket is the fold of its rows with seq <= K: the
latest state row (``set`` or ``cpt``) <= K, then every later ``add`` and
``sub`` <= K. A row whose
facts straddle K (first_seq <= K < seq; only a cutoff in the middle of a
batch) cannot answer K: the caller reads that span's raw events instead.

Reading a span: ``plan`` cuts it into pieces answered by day rollups where
whole UTC days lie inside a price segment, by windows where whole windows do,
and by raw events where a boundary cuts a window.

Month rollups: ingest writes no month rows (a month bucket would get a row
from every batch). A rollup pass at seq S (``usage_index.roll_up``) appends,
for one UTC month, ``cpt`` rows per (customer, meter, dimension group) with
the fold of the day rows <= S of each rollup unit (the month, its 8-day and
its 2-day blocks), and records the pass. A read as known at K >= S of whole
days of that month inside a price segment folds the units that cover them
(`cover`) and the day rows after S: a period reads a few rows per group
whatever its events and ingest batches were. Rollups exist only where day
rollups do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Inexact, InvalidOperation, Overflow
from enum import StrEnum

from meterline.domain.decimals import PRECISION
from meterline.domain.timestamps import US_PER_DAY
from meterline.metering.aggregation import (
    Aggregation,
    CountState,
    State,
    SumState,
    empty,
    kind_of,
    merge,
)

_EXACT = Context(prec=PRECISION, traps=[Inexact, InvalidOperation, Overflow])

SUBTRACTABLE = frozenset({Aggregation.COUNT, Aggregation.SUM})


class RowKind(StrEnum):
    ADD = "add"
    SUB = "sub"
    SET = "set"
    CHECKPOINT = "cpt"  # a `set` that caches the fold at its seq; caused by no fact

    @property
    def is_state(self) -> bool:
        return self in _STATE_KINDS


_STATE_KINDS = frozenset({RowKind.SET, RowKind.CHECKPOINT})


class Grain(StrEnum):
    WINDOW = "w"  # the meter's own window
    DAY = "d"  # UTC day rollup (kept only for meters with windows shorter than a day)
    MONTH = "m"  # UTC calendar-month rollup: `cpt` rows of a rollup pass only
    EIGHT_DAYS = "8"  # 8-day blocks from the month's start (the last one shorter): idem
    TWO_DAYS = "2"  # 2-day blocks from the month's start (the last one may be 1 day): idem


# Rollup units of a pass, coarsest first: a day range inside a rolled-up month is
# covered greedily by the largest units that fit, and single days for the rest, so
# a price change on any day costs a few more rows, not a month of day rows.
UNIT_GRAINS = (Grain.MONTH, Grain.EIGHT_DAYS, Grain.TWO_DAYS)
UNIT_GRAIN_TEXTS = frozenset(str(g) for g in UNIT_GRAINS)
_UNIT_DAYS = {Grain.EIGHT_DAYS: 8, Grain.TWO_DAYS: 2}


def month_units(month_us: int) -> list[tuple[Grain, int, int]]:
    """Every rollup unit of the UTC month starting at ``month_us``: (grain, lo, hi)."""
    end = next_month(month_us)
    out = [(Grain.MONTH, month_us, end)]
    for grain, days in _UNIT_DAYS.items():
        step = days * US_PER_DAY
        out += [(grain, lo, min(lo + step, end)) for lo in range(month_us, end, step)]
    return out


def cover(
    lo: int,
    hi: int,
    month_us: int,
    usable: Callable[[Grain, int], bool] | None = None,
) -> list[tuple[Grain | None, int, int]]:
    """[lo, hi) (whole UTC days inside the month at ``month_us``) as rollup units,
    largest first, and single days (grain None) where no unit fits. ``usable``:
    which units (grain, start) may be used (those a pass has written)."""
    end = next_month(month_us)
    out: list[tuple[Grain | None, int, int]] = []
    at = lo
    while at < hi:
        if at == month_us and end <= hi and (usable is None or usable(Grain.MONTH, at)):
            out.append((Grain.MONTH, at, end))
            at = end
            continue
        for grain, days in _UNIT_DAYS.items():
            step = days * US_PER_DAY
            top = min(at + step, end)
            if (at - month_us) % step == 0 and top <= hi and (usable is None or usable(grain, at)):
                out.append((grain, at, top))
                at = top
                break
        else:
            out.append((None, at, at + US_PER_DAY))
            at += US_PER_DAY
    return out


def unit_of(grain: Grain, day_us: int, month_us: int) -> tuple[Grain, int, int]:
    """The unit of ``grain`` holding the day at ``day_us`` of the month at ``month_us``."""
    end = next_month(month_us)
    if grain is Grain.MONTH:
        return (grain, month_us, end)
    step = _UNIT_DAYS[grain] * US_PER_DAY
    at = day_us - month_us
    lo = month_us + at - at % step
    return (grain, lo, min(lo + step, end))


def month_of(t_us: int) -> int:
    """Start of the UTC calendar month holding ``t_us``."""
    d = _EPOCH + timedelta(microseconds=t_us)
    return _us(datetime(d.year, d.month, 1, tzinfo=UTC))


def next_month(month_us: int) -> int:
    """Start of the UTC calendar month after the one starting at ``month_us``."""
    d = _EPOCH + timedelta(microseconds=month_us)
    y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
    return _us(datetime(y, m, 1, tzinfo=UTC))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(d: datetime) -> int:
    delta = d - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def has_day_rollup(window_us: int) -> bool:
    return window_us < US_PER_DAY


def rollup_grain(window_us: int) -> Grain | None:
    """The rows rollup units fold for meters of this window: day rollups below a day,
    the windows themselves for 1-day windows, none above."""
    if has_day_rollup(window_us):
        return Grain.DAY
    return Grain.WINDOW if window_us == US_PER_DAY else None


@dataclass(frozen=True, slots=True)
class IndexRow:
    seq: int
    first_seq: int
    kind: RowKind
    state: State
    events: int


@dataclass(frozen=True, slots=True)
class Folded:
    """A bucket as known at K: its state, live event count and version (rows <= K)."""

    state: State
    events: int
    version: int


def subtract(a: State, b: State) -> State:
    """``a`` without ``b`` (count and sum only: the others cannot un-merge)."""
    match a, b:
        case CountState(x), CountState(y):
            return CountState(x - y)
        case SumState(x), SumState(y):
            return SumState(_EXACT.subtract(x, y))
        case _:
            raise TypeError(f"cannot subtract from a {kind_of(a)} state")


def fold_rows(kind: Aggregation, rows: Iterable[IndexRow]) -> Folded:
    """Fold one bucket's rows (all with seq <= K) into its state as known at K.

    A state row at seq S holds everything <= S, so at equal seq it folds after
    the deltas it includes. The version counts the rows caused by facts
    (checkpoints are not changes)."""
    if not isinstance(rows, list):
        rows = list(rows)
    if len(rows) == 1 and rows[0].kind is not RowKind.SUB:  # the common case
        only = rows[0]
        return Folded(only.state, only.events, 0 if only.kind is RowKind.CHECKPOINT else 1)
    ordered = sorted(rows, key=lambda r: (r.seq, r.kind in _STATE_KINDS))
    start = 0
    for i, r in enumerate(ordered):
        if r.kind in _STATE_KINDS:
            start = i
    state, events = empty(kind), 0
    for r in ordered[start:]:
        if r.kind in _STATE_KINDS:
            state, events = r.state, r.events
        elif r.kind is RowKind.ADD:
            state, events = merge(state, r.state), events + r.events
        else:
            state, events = subtract(state, r.state), events - r.events
    return Folded(state, events, sum(1 for r in ordered if r.kind is not RowKind.CHECKPOINT))


@dataclass(frozen=True, slots=True)
class Piece:
    """Part of a span read one way: index rows of a grain, or raw events (grain None)."""

    grain: Grain | None
    lo: int
    hi: int
    segment: int


def _ceil(t: int, size: int) -> int:
    return -((-t) // size) * size


def _floor(t: int, size: int) -> int:
    return t - t % size


def plan(span: tuple[int, int], boundaries: Sequence[int], window_us: int) -> list[Piece]:
    """Cut ``span`` into pieces per price segment (``boundaries`` are segment starts).

    Whole UTC days -> day rollups; whole windows -> windows; the rest (a window
    cut by a period or segment boundary) -> raw events.
    """
    lo, hi = span
    starts = [max(lo, b) for b in boundaries] or [lo]
    ends = [*starts[1:], hi]
    out: list[Piece] = []
    for seg, (a, b) in enumerate(zip(starts, ends, strict=True)):
        if a >= b:
            continue
        wa, wb = _ceil(a, window_us), _floor(b, window_us)
        if wa >= wb:
            out.append(Piece(None, a, b, seg))
            continue
        if a < wa:
            out.append(Piece(None, a, wa, seg))
        if has_day_rollup(window_us):
            da, db = _ceil(wa, US_PER_DAY), _floor(wb, US_PER_DAY)
            if da < db:
                if wa < da:
                    out.append(Piece(Grain.WINDOW, wa, da, seg))
                out.append(Piece(Grain.DAY, da, db, seg))
                if db < wb:
                    out.append(Piece(Grain.WINDOW, db, wb, seg))
            else:
                out.append(Piece(Grain.WINDOW, wa, wb, seg))
        else:
            out.append(Piece(Grain.WINDOW, wa, wb, seg))
        if wb < b:
            out.append(Piece(None, wb, b, seg))
    return out


def day_of(t_us: int) -> int:
    return _floor(t_us, US_PER_DAY)


def bucket_size(grain: Grain, window_us: int) -> int:
    return window_us if grain is Grain.WINDOW else US_PER_DAY


__all__ = [
    "SUBTRACTABLE",
    "UNIT_GRAINS",
    "UNIT_GRAIN_TEXTS",
    "Folded",
    "Grain",
    "IndexRow",
    "Piece",
    "RowKind",
    "bucket_size",
    "cover",
    "day_of",
    "fold_rows",
    "has_day_rollup",
    "month_of",
    "month_units",
    "next_month",
    "plan",
    "rollup_grain",
    "subtract",
    "unit_of",
]
