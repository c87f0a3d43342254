"""Watermarks, window finality and lateness (DESIGN §4). Pure functions over plain data.

Per source, the watermark is the greatest event_time seen from it. The global
watermark is the least watermark over *active* sources, those whose last
receipt is within ``idle_timeout`` of the current receiving time, so one
silent source cannot stall finality forever.

When no source is active, the global watermark is the greatest per-source
watermark: nothing is in flight by our own definition, so waiting longer
learns nothing and would only stall billing. A straggler that resumes later
sends events for windows that may now be final; they are *late*, which is
exactly the correction path (new window version, period marked for re-rating).

Finality must never be revoked, yet a lagging source becoming active again
lowers the least watermark. Pass the previously published global watermark as
``previous`` and the result never goes backwards.

Received times are used here for operations only (which source is idle); they
never change a usage number, only when a window is declared final.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from meterline.domain.timestamps import US_PER_HOUR
from meterline.metering.windows import Window, window_of

DEFAULT_IDLE_TIMEOUT_US = US_PER_HOUR


class SourceState(NamedTuple):
    watermark_us: int
    """Greatest event_time seen from the source."""
    last_received_us: int
    """Greatest receiving time of anything from the source."""


Sources = Mapping[str, SourceState]


def advance(
    sources: Sources, events: Iterable[tuple[str, int]], received_at_us: int
) -> dict[str, SourceState]:
    """New per-source state after receiving ``(source, event_time_us)`` pairs at one time.

    Both fields only grow (max), so replays and clock hiccups cannot move a
    watermark backwards. Callers should leave backfills out: deliberately old
    events are not a sign of where a live source is.
    """
    state = dict(sources)
    for source, event_time in events:
        old = state.get(source)
        if old is None:
            state[source] = SourceState(event_time, received_at_us)
        else:
            state[source] = SourceState(
                max(old.watermark_us, event_time), max(old.last_received_us, received_at_us)
            )
    return state


def active_sources(
    sources: Sources, now_us: int, idle_timeout_us: int = DEFAULT_IDLE_TIMEOUT_US
) -> list[str]:
    """Sources that sent something within ``idle_timeout`` of ``now_us`` (inclusive), sorted."""
    return sorted(s for s, st in sources.items() if now_us - st.last_received_us <= idle_timeout_us)


def global_watermark(
    sources: Sources,
    now_us: int,
    idle_timeout_us: int = DEFAULT_IDLE_TIMEOUT_US,
    previous: int | None = None,
) -> int | None:
    """Least watermark over active sources (see the module docstring for the rest).

    None if nothing ever arrived and there is no ``previous``.
    """
    active = active_sources(sources, now_us, idle_timeout_us)
    computed: int | None
    if active:
        computed = min(sources[s].watermark_us for s in active)
    elif sources:
        computed = max(st.watermark_us for st in sources.values())
    else:
        computed = None
    if previous is None:
        return computed
    return previous if computed is None else max(previous, computed)


def is_final(window_end_us: int, allowed_lateness_us: int, watermark_us: int | None) -> bool:
    """A window is final once the global watermark >= its end + allowed lateness."""
    return watermark_us is not None and watermark_us >= window_end_us + allowed_lateness_us


class LatenessStatus(StrEnum):
    ON_TIME = "on_time"
    """The watermark has not yet passed the window's end: ordinary traffic."""
    UPDATES_OPEN_WINDOW = "updates_open_window"
    """The window has ended but is within allowed lateness: it is updated in place."""
    LATE = "late"
    """The window is final: it gets a new version and its periods need re-rating."""


@dataclass(frozen=True)
class Lateness:
    status: LatenessStatus
    window: Window
    late_by_us: int
    """How far the watermark is past the window's finality point (0 unless LATE)."""


def classify_lateness(
    event_time_us: int, window_us: int, allowed_lateness_us: int, watermark_us: int | None
) -> Lateness:
    """Classify an arriving event against the global watermark known before its batch."""
    window = window_of(event_time_us, window_us)
    if is_final(window.end, allowed_lateness_us, watermark_us):
        assert watermark_us is not None
        late_by = watermark_us - (window.end + allowed_lateness_us)
        return Lateness(LatenessStatus.LATE, window, late_by)
    if watermark_us is not None and watermark_us >= window.end:
        return Lateness(LatenessStatus.UPDATES_OPEN_WINDOW, window, 0)
    return Lateness(LatenessStatus.ON_TIME, window, 0)
