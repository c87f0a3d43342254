"""Measuring a subscription's usage for one period from the usage index (DESIGN §4).

The span is cut per price segment (``metering.bitemporal.plan``): whole UTC
days are read from day rollups (or from the units of a month rollup pass <= K
and the day rows after it), whole windows from windows, and only windows
cut by a period or segment boundary (a +05:30 month start, a mid-hour price
change) from raw events. Everything is "as known at K": index rows with
seq <= K, events with seq <= K not retracted at K. Should a row straddle K
(a cutoff inside an ingest batch), the span is measured from raw events.

``raw=True`` measures the whole span from raw events (the reference the
index is tested against); it gives the same groups, states and counts.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Inexact, InvalidOperation, Overflow
from typing import Any

from sqlalchemy.engine import Connection

from meterline.billing.document import FORMAT
from meterline.billing.usage import GroupUsage, Measurement
from meterline.domain.decimals import PRECISION
from meterline.metering import Meter, State, empty, merge
from meterline.metering.aggregation import CountState, SumState
from meterline.metering.bitemporal import (
    SUBTRACTABLE,
    UNIT_GRAIN_TEXTS,
    Grain,
    Piece,
    RowKind,
    fold_rows,
    plan,
    rollup_grain,
)
from meterline.store import usage_index
from meterline.store.facts import facts


@dataclass
class _Group:
    meter: Meter
    states: list[State]
    events: int = 0
    windows: set[int] = field(default_factory=set)
    seg_events: list[int] = field(default_factory=list)  # events per price segment

    def __post_init__(self) -> None:
        if not self.seg_events:
            self.seg_events = [0] * len(self.states)


def _raw_rows(
    conn: Connection, customer: str, types: list[str], lo: int, hi: int, known_at: int
) -> list[tuple[str, str, str, int, str]]:
    return facts(conn).measure_rows(customer, types, lo, hi, known_at)


def _add_raw(
    groups: dict[tuple[str, str], _Group],
    conn: Connection,
    customer: str,
    meters: Sequence[Meter],
    boundaries: Sequence[int],
    ranges: Sequence[tuple[int, int]],
    known_at: int,
) -> None:
    if not ranges:
        return
    m = Measurement(meters, boundaries)
    types = sorted({x.event_type for x in meters})
    for lo, hi in ranges:
        m.add(_raw_rows(conn, customer, types, lo, hi, known_at))
    for key, g in m.groups().items():
        if not g.events:
            continue
        acc = groups.setdefault(
            key, _Group(g.meter, [empty(g.meter.aggregation)] * len(boundaries))
        )
        acc.states = [merge(a, b) for a, b in zip(acc.states, g.states, strict=True)]
        acc.events += g.events
        for i, n in enumerate(g.segment_event_counts()):
            acc.seg_events[i] += n or 0


def _add_index(
    groups: dict[tuple[str, str], _Group],
    conn: Connection,
    customer: str,
    meters: Sequence[Meter],
    boundaries: Sequence[int],
    pieces: Sequence[Piece],
    known_at: int,
    checkpoint: bool,
    prefetched: usage_index.Read | None = None,
) -> bool:
    """Fold the index pieces into ``groups``; False if a row straddles K."""
    indexed = [p for p in pieces if p.grain is not None]
    if not indexed:
        return True
    got = prefetched
    ranges = [(p.grain, p.lo, p.hi) for p in indexed if p.grain is not None]
    codes = [m.code for m in meters]
    days = rollup_grain(meters[0].window_us)
    if got is None or got.refold:
        got = usage_index.read(conn, customer, codes, ranges, known_at, rollups=days or False)
    if got.refold:  # a day's whole state after the month's rollup pass
        got = usage_index.read(conn, customer, codes, ranges, known_at)
    if got.straddles:
        return False
    kinds = {m.code: m.aggregation for m in meters}
    if checkpoint:
        usage_index.checkpoint(conn, got, kinds, known_at)
    by_code = {m.code: m for m in meters}
    by_grain: dict[str, list[Piece]] = {}
    for p in sorted(indexed, key=lambda p: p.lo):
        by_grain.setdefault(str(p.grain), []).append(p)
    starts = {g: [p.lo for p in ps] for g, ps in by_grain.items()}
    n = len(boundaries)
    # Count and sum buckets are added up as plain numbers and made states once per
    # group and segment: the same additions, in the same order, as merging state
    # by state (ints; exact Decimal additions), without a state object per bucket.
    # A count or sum bucket of `add` rows only (no state row, no `sub`) folds to the
    # sum of its rows: they are added straight in (exact: the order does not matter).
    running: dict[tuple[tuple[str, str], int], Any] = {}
    add = RowKind.ADD
    for key, rows in got.rows.items():
        code, _, grain, dims, start = key
        parts: list[tuple[State, int]]
        if len(rows) == 1:
            only = rows[0]
            parts = [(only.state, only.events)] if only.kind is not RowKind.SUB else []
        elif kinds[code] in SUBTRACTABLE and all(r.kind is add for r in rows):
            parts = [(r.state, r.events) for r in rows]
        else:
            parts = []
        if not parts:
            folded = fold_rows(kinds[code], rows)
            parts = [(folded.state, folded.events)]
        g = str(days) if grain in UNIT_GRAIN_TEXTS else grain  # a unit lies in one day piece
        segment = by_grain[g][bisect_right(starts[g], start) - 1].segment
        gk = (code, dims)
        acc = groups.get(gk)
        if acc is None:
            meter = by_code[code]
            acc = groups[gk] = _Group(meter, [empty(meter.aggregation)] * n)
        rk = (gk, segment)
        for state, events in parts:
            acc.events += events
            acc.seg_events[segment] += events
            current = acc.states[segment]
            if isinstance(state, CountState) and isinstance(current, CountState):
                running[rk] = running.get(rk, current.count) + state.count
            elif isinstance(state, SumState) and isinstance(current, SumState):
                total = running.get(rk)
                running[rk] = _EXACT.add(current.total if total is None else total, state.total)
            else:
                _settle(groups, running, rk)
                acc.states[segment] = merge(acc.states[segment], state)
    for rk in list(running):
        _settle(groups, running, rk)
    return True


_EXACT = Context(prec=PRECISION, traps=[Inexact, InvalidOperation, Overflow])  # as `merge`


def _settle(
    groups: dict[tuple[str, str], _Group], running: dict[tuple[tuple[str, str], int], Any], rk: Any
) -> None:
    """Make the running count or sum of one group's segment its state."""
    value = running.pop(rk, None)
    if value is None:
        return
    gk, segment = rk
    states = groups[gk].states
    states[segment] = CountState(value) if type(value) is int else SumState(value)


IndexRequest = tuple[tuple[str, ...], tuple[tuple[Grain, int, int], ...]]
"""What `measure` reads of the index for one window size: meter codes, bucket ranges."""


def index_requests(
    meters: Sequence[Meter], span: tuple[int, int], boundaries: Sequence[int]
) -> dict[int, IndexRequest]:
    """The index reads `measure` makes, per window size (none where no piece is indexed).

    An invoice run groups its customers by request and reads each group with one
    statement (``usage_index.read_many``), then hands the reads to `measure`."""
    by_size: dict[int, list[Meter]] = {}
    for m in meters:
        by_size.setdefault(m.window_us, []).append(m)
    out: dict[int, IndexRequest] = {}
    for size, ms in by_size.items():
        ranges = tuple(
            (p.grain, p.lo, p.hi) for p in plan(span, boundaries, size) if p.grain is not None
        )
        if ranges:
            out[size] = (tuple(m.code for m in ms), ranges)
    return out


def measure(
    conn: Connection,
    customer: str,
    meters: list[Meter],
    span: tuple[int, int],
    boundaries: list[int],
    known_at: int,
    *,
    raw: bool = False,
    checkpoint: bool = False,
    prefetched: Mapping[int, usage_index.Read] | None = None,
) -> dict[tuple[str, str], GroupUsage]:
    """Usage of ``meters`` for the customer over ``span`` as known at K, per segment.

    ``checkpoint``: K is the current seq of a write transaction holding the
    knowledge lock (issuing, re-rating); buckets folded from many rows get a
    checkpoint row so the next read is short. ``prefetched``: the index reads
    of `index_requests`, per window size, already made (as known at K)."""
    groups: dict[tuple[str, str], _Group] = {}
    by_size: dict[int, list[Meter]] = {}
    for m in meters:
        by_size.setdefault(m.window_us, []).append(m)
    for size, ms in sorted(by_size.items()):
        pieces = [] if raw else plan(span, boundaries, size)
        got = None if prefetched is None else prefetched.get(size)
        if raw or not _add_index(
            groups, conn, customer, ms, boundaries, pieces, known_at, checkpoint, got
        ):
            for code in [m.code for m in ms]:
                for key in [k for k in groups if k[0] == code]:
                    del groups[key]
            _add_raw(groups, conn, customer, ms, boundaries, [span], known_at)
            continue
        raw_ranges = [(p.lo, p.hi) for p in pieces if p.grain is None]
        _add_raw(groups, conn, customer, ms, boundaries, raw_ranges, known_at)
    out: dict[tuple[str, str], GroupUsage] = {}
    for (code, dims), g in groups.items():
        if g.events:
            out[(code, dims)] = GroupUsage(
                g.meter, dims, g.states, g.events, format=FORMAT, segment_events=g.seg_events
            )
    n = len(boundaries)
    for m in meters:
        if not m.group_by and not any(k[0] == m.code for k in out):
            out[(m.code, "[]")] = GroupUsage(
                m,
                "[]",
                [empty(m.aggregation) for _ in range(n)],
                format=FORMAT,
                segment_events=[0] * n,
            )
    return out
