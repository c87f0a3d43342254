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

from meterline.domain.errors import MeterlineError
from meterline.domain.events import Event, decode_json
from meterline.metering import (
    Aggregation,
    Meter,
    State,
    add,
    dimensions,
    empty,
    encode_dimensions,
    merge_all,
    result,
    value_of,
    window_start,
)

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

    def segment_quantities(self) -> list[Decimal]:
        return [result(s) or Decimal(0) for s in self.states]

    def period_quantity(self) -> Decimal:
        return result(merge_all(self.meter.aggregation, self.states)) or Decimal(0)

    def digest(self) -> str:
        """sha256 over the sorted event keys: names exactly which events were billed."""
        h = hashlib.sha256()
        for source, event_id in sorted(self.keys):
            h.update(f"{source}\x1f{event_id}\n".encode())
        return h.hexdigest()

    def provenance(self) -> dict[str, Any]:
        ws = sorted(self.windows)
        size = self.meter.window_us
        from meterline.domain.timestamps import format_us
        from meterline.metering import format_duration

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


def collect(
    events: Iterable[Event],
    meters: Sequence[Meter],
    boundaries: Sequence[int],
) -> dict[tuple[str, str], GroupUsage]:
    """Fold events into per-segment states. `boundaries` are the segment starts
    (sorted); events are assumed to lie inside the span already."""
    by_type: dict[str, list[Meter]] = {}
    for m in meters:
        by_type.setdefault(m.event_type, []).append(m)
    n = len(boundaries)
    groups: dict[tuple[str, str], GroupUsage] = {}
    for ev in events:
        ms = by_type.get(ev.event_type)
        if not ms:
            continue
        props: Mapping[str, Any] = decode_json(ev.properties)
        segment = bisect_right(boundaries, ev.event_time) - 1
        for m in ms:
            try:
                value = value_of(m, props)
                dims = encode_dimensions(dimensions(m, props))
            except MeterlineError:
                continue  # stored but unbillable; reconciliation lists it
            key = (m.code, dims)
            g = groups.get(key)
            if g is None:
                g = groups[key] = GroupUsage(m, dims, [empty(m.aggregation) for _ in range(n)])
            g.states[segment] = add(g.states[segment], ev.event_time, ev.event_id, value)
            g.events += 1
            g.windows.add(window_start(ev.event_time, m.window_us))
            g.keys.append((ev.source, ev.event_id))
    for m in meters:
        if not m.group_by and not any(k[0] == m.code for k in groups):
            groups[(m.code, "[]")] = GroupUsage(m, "[]", [empty(m.aggregation) for _ in range(n)])
    return groups
