"""Measuring a subscription's usage for one period, straight from the event log.

Invoices are built from raw events as known at the cutoff, not from the window
index: the log is the truth, price segments need not align with windows, and
the explanation needs each line's event count and a digest of its event keys.
Additive meters are measured per price segment (split by event time);
non-additive ones over the whole span (DESIGN §5).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from meterline.billing import body
from meterline.domain.errors import MeterlineError
from meterline.domain.events import Event, decode_json
from meterline.metering import (
    Aggregation,
    Meter,
    State,
    aggregate,
    dimensions,
    empty,
    encode_dimensions,
    merge,
    merge_all,
    result,
    value_of,
)
from meterline.metering.aggregation import CountState

ADDITIVE = frozenset({Aggregation.COUNT, Aggregation.SUM})


@dataclass
class GroupUsage:
    """One (meter, dimension group): states per price segment and provenance."""

    meter: Meter
    dims: str
    states: list[State]
    events: int = 0
    windows: set[int] = field(default_factory=set)
    keys: list[tuple[str, str]] = field(default_factory=list)
    events_digest: str | None = None  # precomputed over `keys` (see Measurement)
    format: int = 1  # document format: 1 names its events by digest, 2 by count only
    segment_events: list[int] | None = None  # billable events per price segment

    def segment_quantities(self) -> list[Decimal]:
        return [result(s) or Decimal(0) for s in self.states]

    def segment_event_counts(self) -> list[int | None]:
        """Events per segment: what a fixed fee per event (percentage) multiplies.

        None where unknown (a measurement that did not count them): pricing then
        refuses a fixed fee per event rather than bill 0 events."""
        if self.segment_events is not None:
            return list(self.segment_events)
        return [s.count if isinstance(s, CountState) else None for s in self.states]

    def period_quantity(self) -> Decimal:
        return result(merge_all(self.meter.aggregation, self.states)) or Decimal(0)

    def digest(self) -> str:
        """sha256 over the sorted event keys: names exactly which events were billed.

        One ``update`` over the joined lines: the same bytes, so the same digest,
        as hashing key by key, without a call per event."""
        if self.events_digest is not None:
            return self.events_digest
        return _digest(_lines(sorted(self.keys)))

    def usage(self) -> body.Usage:
        """The line's provenance as a typed value (the same fields as `provenance`)."""
        from meterline.domain.timestamps import format_us
        from meterline.metering import format_duration

        size = self.meter.window_us
        if self.format >= 2:
            return body.Usage(event_count=self.events, window=format_duration(size))
        ws = sorted(self.windows)
        return body.Usage(
            event_count=self.events,
            events_digest=self.digest(),
            windows=body.Windows(
                size=format_duration(size),
                count=len(ws),
                first=format_us(ws[0]) if ws else None,
                last=format_us(ws[-1] + size) if ws else None,
            ),
        )

    def provenance(self) -> dict[str, Any]:
        from meterline.domain.timestamps import format_us
        from meterline.metering import format_duration

        size = self.meter.window_us
        if self.format >= 2:
            # Format 2 (DESIGN §7): what the usage index answers exactly at any
            # cutoff; the events themselves are listed by drill-down.
            return {"event_count": self.events, "window": format_duration(size)}
        ws = sorted(self.windows)

        return {
            "event_count": self.events,
            "events_digest": self.digest(),
            "windows": {
                "size": format_duration(size),
                "count": len(ws),
                "first": format_us(ws[0]) if ws else None,
                "last": format_us(ws[-1] + size) if ws else None,
            },
        }


Row = tuple[str, str, str, int, str]
"""What measuring reads of an event: source, event_id, event_type, event_time, properties."""

# Distinct property texts remembered per meter set (bounded): telemetry repeats
# a limited vocabulary of property objects across events and customers.
_READINGS_CACHE = 100_000


def collect(
    events: Iterable[Event],
    meters: Sequence[Meter],
    boundaries: Sequence[int],
) -> dict[tuple[str, str], GroupUsage]:
    """Fold events into per-segment states. `boundaries` are the segment starts
    (sorted); events are assumed to lie inside the span already."""
    return collect_rows(
        ((e.source, e.event_id, e.event_type, e.event_time, e.properties) for e in events),
        meters,
        boundaries,
    )


Reading = tuple[tuple[str, str], Any, Meter] | None
"""(group key, value, meter) of an event for one meter; None when unbillable."""


class _Plan:
    """How one event type is measured: its meters, whether properties are read,
    and the readings of property texts seen so far (the same text always reads
    the same, so they are shared by every measurement with these meters)."""

    __slots__ = ("constant", "meters", "needs_properties", "readings")

    def __init__(self, meters: tuple[Meter, ...]) -> None:
        self.meters = meters
        self.needs_properties = any(
            m.aggregation != Aggregation.COUNT or m.group_by for m in meters
        )
        # count without group_by reads nothing: every event is (None, "[]")
        self.constant: list[Reading] = [((m.code, "[]"), None, m) for m in meters]
        self.readings: dict[str, list[Reading]] = {}


_PLANS: dict[tuple[Meter, ...], _Plan] = {}
_DIMS_TEXT: dict[Any, str] = {}


def _plan(meters: tuple[Meter, ...]) -> _Plan:
    plan = _PLANS.get(meters)
    if plan is None:
        if len(_PLANS) >= 256:
            _PLANS.clear()
        plan = _PLANS[meters] = _Plan(meters)
    return plan


# Meter readings of raw property values: `value_of` depends only on the meter's
# aggregation and property and on the raw value (its type included: True is not
# 1, and 1.0 is not 1), so readings are shared across calls. Bounded.
_VALUES: dict[tuple[Any, ...], Any] = {}
_VALUES_SIZE = 200_000


def _value(m: Meter, props: Mapping[str, Any]) -> Any:
    """`value_of`, remembered per (aggregation, property, raw value)."""
    if m.aggregation is Aggregation.COUNT or m.property is None:
        return value_of(m, props)
    raw = props.get(m.property)
    if raw is None or isinstance(raw, bool) or not isinstance(raw, int | str | Decimal):
        return value_of(m, props)
    key = (m.aggregation, m.property, type(raw), str(raw) if isinstance(raw, Decimal) else raw)
    value = _VALUES.get(key, _VALUES)
    if value is _VALUES:
        value = value_of(m, props)  # raises for an unbillable value: never remembered
        if len(_VALUES) >= _VALUES_SIZE:
            _VALUES.clear()
        _VALUES[key] = value
    return value


def _read(meters: tuple[Meter, ...], props: Mapping[str, Any]) -> list[Reading]:
    out: list[Reading] = []
    dims_text = _DIMS_TEXT
    for m in meters:
        try:
            value = _value(m, props)
            dims = dimensions(m, props)
        except MeterlineError:
            out.append(None)  # stored but unbillable; reconciliation lists it
            continue
        text = dims_text.get(dims)
        if text is None:
            if len(dims_text) >= _VALUES_SIZE:
                dims_text.clear()
            text = dims_text[dims] = encode_dimensions(dims)
        out.append(((m.code, text), value, m))
    return out


def _lines(keys: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{source}\x1f{event_id}\n" for source, event_id in keys]


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class _Acc:
    """A group being measured: per-segment states, windows, and its event keys
    kept sorted (with their digest lines) so that a few more events cost a few
    insertions, not a sort of every key."""

    __slots__ = (
        "counts",
        "digest",
        "entries",
        "keys",
        "lines",
        "meter",
        "new_keys",
        "seg_events",
        "states",
        "windows",
    )

    def __init__(self, meter: Meter, n: int) -> None:
        self.meter = meter
        self.states: list[State] = [empty(meter.aggregation) for _ in range(n)]
        self.counts = [0] * n  # count meters: events per segment (folded into states)
        self.seg_events = [0] * n  # every meter: billable events per segment
        self.entries: list[list[tuple[int, str, Any]]] = [[] for _ in range(n)]
        self.windows: set[int] = set()
        self.keys: list[tuple[str, str]] = []  # sorted
        self.lines: list[str] = []  # _lines(keys)
        self.new_keys: list[tuple[str, str]] = []
        self.digest = _digest([])

    def settle(self) -> None:
        """Fold what `add` gathered into the states, the sorted keys and the digest."""
        kind = self.meter.aggregation
        for i, (count, entries) in enumerate(zip(self.counts, self.entries, strict=True)):
            if count:
                self.states[i] = merge(self.states[i], CountState(count))
                self.counts[i] = 0
            elif entries:
                self.states[i] = merge(self.states[i], aggregate(kind, entries))
                self.entries[i] = []
        if not self.new_keys:
            return
        fresh = sorted(self.new_keys)
        self.new_keys = []
        # New lists, never changed in place: snapshots handed out keep theirs.
        if not self.keys:
            keys, lines = fresh, _lines(fresh)
        elif len(fresh) * 8 > len(self.keys):
            keys = sorted(self.keys + fresh)
            lines = _lines(keys)
        else:
            keys, lines = list(self.keys), list(self.lines)
            for key in fresh:
                at = bisect_right(keys, key)
                keys.insert(at, key)
                lines.insert(at, f"{key[0]}\x1f{key[1]}\n")
        self.keys, self.lines = keys, lines
        self.digest = _digest(lines)


class Measurement:
    """Usage of some meters over a span split at `boundaries`, built by adding
    event rows; more rows can be added later (states merge, so neither the
    order of events nor how they are split between `add` calls matters)."""

    def __init__(self, meters: Sequence[Meter], boundaries: Sequence[int]) -> None:
        self.meters = tuple(meters)
        self.boundaries = tuple(boundaries)
        by_type: dict[str, list[Meter]] = {}
        for m in meters:
            by_type.setdefault(m.event_type, []).append(m)
        self._plans = {t: _plan(tuple(ms)) for t, ms in by_type.items()}
        self._accs: dict[tuple[str, str], _Acc] = {}
        self.events = 0  # rows added (billable or not)

    def add(self, rows: Iterable[Row]) -> None:
        boundaries = self.boundaries
        n = len(boundaries)
        first = boundaries[0] if n else 0
        accs, plans = self._accs, self._plans
        count = Aggregation.COUNT
        touched: set[tuple[str, str]] = set()
        for source, event_id, event_type, event_time, properties in rows:
            self.events += 1
            plan = plans.get(event_type)
            if plan is None:
                continue
            if n == 1 and event_time >= first:
                segment = 0
            else:
                segment = bisect_right(boundaries, event_time) - 1
            if plan.needs_properties:
                readings = plan.readings.get(properties)
                if readings is None:
                    readings = _read(plan.meters, decode_json(properties))
                    if len(plan.readings) >= _READINGS_CACHE:
                        plan.readings.clear()
                    plan.readings[properties] = readings
            else:
                readings = plan.constant
            for reading in readings:
                if reading is None:
                    continue
                key, value, m = reading
                acc = accs.get(key)
                if acc is None:
                    acc = accs[key] = _Acc(m, n)
                touched.add(key)
                acc.seg_events[segment] += 1
                if m.aggregation is count:
                    acc.counts[segment] += 1
                else:
                    acc.entries[segment].append((event_time, event_id, value))
                acc.windows.add(event_time - event_time % m.window_us)
                acc.new_keys.append((source, event_id))
        for key in touched:
            accs[key].settle()

    def groups(self) -> dict[tuple[str, str], GroupUsage]:
        """A snapshot (copies: later `add` calls do not change it)."""
        n = len(self.boundaries)
        groups: dict[tuple[str, str], GroupUsage] = {}
        for (code, dims), acc in self._accs.items():
            groups[(code, dims)] = GroupUsage(
                acc.meter,
                dims,
                list(acc.states),
                len(acc.keys),
                set(acc.windows),
                acc.keys,
                acc.digest,
                segment_events=list(acc.seg_events),
            )
        for m in self.meters:
            if not m.group_by and not any(k[0] == m.code for k in groups):
                groups[(m.code, "[]")] = GroupUsage(
                    m, "[]", [empty(m.aggregation) for _ in range(n)]
                )
        return groups


def collect_rows(
    rows: Iterable[Row],
    meters: Sequence[Meter],
    boundaries: Sequence[int],
) -> dict[tuple[str, str], GroupUsage]:
    """`collect` over plain rows (see `Measurement`)."""
    measurement = Measurement(meters, boundaries)
    measurement.add(rows)
    return measurement.groups()
