"""The ingest hook: the usage index, lateness and watermarks, kept in step
with the event log inside each transaction.

Per batch: the batch's `add` rows are appended to the bitemporal usage index
(`store/usage_index.py`, one statement, no read-modify-write). The same
transaction records late arrivals (the rule is `metering.classify_lateness`,
the one place it lives), advances the watermarks and marks customer time
ranges for re-rating, so the index and the log cannot diverge.

`fold` and `recompute` fold raw events into window states: the reference
reconciliation compares the index with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.events import Event, Rejection, decode_json, properties_of
from meterline.metering import (
    Aggregation,
    LatenessStatus,
    Meter,
    SourceState,
    aggregate,
    classify_lateness,
    dimensions,
    encode_dimensions,
    value_of,
    window_start,
)
from meterline.metering import advance as advance_sources
from meterline.metering import global_watermark as compute_global
from meterline.metering.watermark import DEFAULT_IDLE_TIMEOUT_US
from meterline.store import driver, sequence, usage_index
from meterline.store.event_log import AppendResult, BatchHeader, Retraction
from meterline.store.facts import facts
from meterline.store.meter_catalog import MeterCatalog

WindowKey = tuple[str, str, str, int]  # meter code, customer, dimensions, window start


@dataclass(frozen=True)
class WindowRow:
    state: Any
    event_count: int
    last_seq: int


def check_properties(catalog: MeterCatalog, event: Event) -> Rejection | None:
    """INVALID_PROPERTY at ingestion: a metered event must carry what its meters read."""
    meters = catalog.by_type.get(event.event_type)
    if not meters:
        return None
    props = properties_of(event)
    for m in meters:
        try:
            value_of(m, props)
        except MeterlineError as exc:
            return Rejection(ErrorCode.INVALID_PROPERTY, exc.message)
    return None


def _needs_properties(meters: list[Meter]) -> bool:
    return any(m.aggregation != Aggregation.COUNT or m.group_by for m in meters)


def fold(
    catalog_by_type: Mapping[str, list[Meter]], events: Iterable[tuple[int, Event]]
) -> dict[WindowKey, WindowRow]:
    """Aggregate events into window states (skipping events a meter cannot read)."""
    entries: dict[WindowKey, list[tuple[int, str, Any]]] = {}
    last: dict[WindowKey, int] = {}
    kinds: dict[WindowKey, Aggregation] = {}
    for seq, ev in events:
        meters = catalog_by_type.get(ev.event_type)
        if not meters:
            continue
        props = decode_json(ev.properties) if _needs_properties(meters) else {}
        for m in meters:
            try:
                value = value_of(m, props)
                dims = encode_dimensions(dimensions(m, props))
            except MeterlineError:
                continue  # reported by reconciliation (meter added after the event)
            key = (m.code, ev.customer_id, dims, window_start(ev.event_time, m.window_us))
            bucket = entries.get(key)
            if bucket is None:
                entries[key] = bucket = []
                kinds[key] = m.aggregation
            bucket.append((ev.event_time, ev.event_id, value))
            if seq > last.get(key, 0):
                last[key] = seq
    return {
        key: WindowRow(aggregate(kinds[key], bucket), len(bucket), last[key])
        for key, bucket in entries.items()
    }


def load_sources(conn: Connection) -> dict[str, SourceState]:
    rows = conn.execute(text("SELECT source, watermark, last_received FROM source_watermarks"))
    return {str(r[0]): SourceState(int(r[1]), int(r[2])) for r in rows}


def stored_global(conn: Connection) -> int | None:
    value = conn.execute(text("SELECT watermark FROM global_watermark WHERE id = 1")).scalar_one()
    return None if value is None else int(value)


def current_watermark(
    conn: Connection, now_us: int, idle_timeout_us: int = DEFAULT_IDLE_TIMEOUT_US
) -> int | None:
    return compute_global(load_sources(conn), now_us, idle_timeout_us, previous=stored_global(conn))


_MARK_SQL = (
    "INSERT INTO rerate_marks (seq, customer_id, from_us, to_us, kind, reason, events, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def add_mark(
    conn: Connection,
    seq: int,
    customer: str,
    lo: int,
    hi: int,
    kind: str,
    reason: str,
    events: int,
    now_us: int,
) -> None:
    driver.execute_many(conn, _MARK_SQL, [(seq, customer, lo, hi, kind, reason, events, now_us)])


class WindowIndex:
    """The ingest hook (an `AppendHook`) plus the other index maintenance paths."""

    def __init__(
        self, catalog: MeterCatalog, idle_timeout_us: int = DEFAULT_IDLE_TIMEOUT_US
    ) -> None:
        self.catalog = catalog
        self.idle_timeout_us = idle_timeout_us

    def __call__(self, conn: Connection, header: BatchHeader, result: AppendResult) -> None:
        if not result.accepted:
            return
        self.catalog.refresh(conn)
        now = header.received_at
        sources = load_sources(conn)
        previous = stored_global(conn)
        before = compute_global(sources, now, self.idle_timeout_us, previous=previous)
        by_type = self.catalog.by_type
        usage_index.append(conn, usage_index.fold_events(by_type, result.accepted))
        self._record_lateness(conn, header, result, before)
        if not header.backfill:
            after_sources = advance_sources(
                sources, ((ev.source, ev.event_time) for _, ev in result.accepted), now
            )
            self._save_sources(conn, sources, after_sources)
            after = compute_global(after_sources, now, self.idle_timeout_us, previous=previous)
            if after != previous:
                conn.execute(
                    text("UPDATE global_watermark SET watermark = :w WHERE id = 1"), {"w": after}
                )

    def _record_lateness(
        self, conn: Connection, header: BatchHeader, result: AppendResult, watermark: int | None
    ) -> None:
        late: list[tuple[Any, ...]] = []
        ranges: dict[str, list[int]] = {}
        by_type = self.catalog.by_type
        received_at = header.received_at
        for seq, ev in result.accepted:
            meters = by_type.get(ev.event_type)
            if not meters:
                continue
            is_late = False
            for m in meters:
                if header.backfill:
                    break
                if watermark is None or ev.event_time >= watermark - m.allowed_lateness_us:
                    continue  # its window ends after the event: not final, so not late
                lateness = classify_lateness(
                    ev.event_time, m.window_us, m.allowed_lateness_us, watermark
                )
                if lateness.status is LatenessStatus.LATE:
                    is_late = True
                    late.append(
                        (
                            seq,
                            ev.source,
                            ev.event_id,
                            m.code,
                            ev.customer_id,
                            lateness.window.start,
                            lateness.window.end,
                            lateness.late_by_us,
                            watermark,
                            received_at,
                        )
                    )
            if is_late or header.backfill:
                r = ranges.get(ev.customer_id)
                if r is None:
                    ranges[ev.customer_id] = [ev.event_time, ev.event_time + 1, 1, seq]
                else:
                    r[0] = min(r[0], ev.event_time)
                    r[1] = max(r[1], ev.event_time + 1)
                    r[2] += 1
                    r[3] = max(r[3], seq)
        # One statement per table, through the driver: every event of a batch may be late.
        driver.execute_many(
            conn,
            "INSERT INTO late_arrivals (event_seq, source, event_id, meter_code, customer_id, "
            "window_start, window_end, late_by_us, watermark, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            late,
        )
        kind = "backfill" if header.backfill else "late"
        what = (
            "events backfilled"
            if header.backfill
            else "events arrived after their windows were final"
        )
        driver.execute_many(
            conn,
            _MARK_SQL,
            [
                (seq, customer, lo, hi, kind, f"{n} {what}", n, received_at)
                for customer, (lo, hi, n, seq) in sorted(ranges.items())
            ],
        )

    @staticmethod
    def _save_sources(
        conn: Connection, before: Mapping[str, SourceState], after: Mapping[str, SourceState]
    ) -> None:
        for source, st in after.items():
            old = before.get(source)
            if old == st:
                continue
            params = {"s": source, "w": st.watermark_us, "r": st.last_received_us}
            if old is None:
                conn.execute(
                    text(
                        "INSERT INTO source_watermarks (source, watermark, last_received) VALUES (:s, :w, :r)"
                    ),
                    params,
                )
            else:
                conn.execute(
                    text(
                        "UPDATE source_watermarks SET watermark = :w, last_received = :r WHERE source = :s"
                    ),
                    params,
                )

    def on_retract(self, conn: Connection, retraction: Retraction, now_us: int) -> None:
        """Index rows for the retraction (see `usage_index.on_retraction`), and mark its period."""
        if retraction.already:
            return
        self.catalog.refresh(conn)
        row = conn.execute(
            text(
                "SELECT source, event_id, customer_id, event_type, event_time, properties, "
                "content_hash FROM events WHERE seq = :q"
            ),
            {"q": retraction.event_seq},
        ).one()
        ev = Event(row[0], row[1], row[2], row[3], int(row[4]), row[5], row[6])
        meters = self.catalog.by_type.get(ev.event_type, [])
        usage_index.on_retraction(conn, meters, ev, retraction.seq)
        if meters:
            add_mark(
                conn,
                retraction.seq,
                ev.customer_id,
                ev.event_time,
                ev.event_time + 1,
                "retraction",
                f"event ({retraction.source}, {retraction.event_id}) retracted: {retraction.reason}",
                1,
                now_us,
            )


def recompute(
    conn: Connection,
    meter: Meter,
    customer: str | None = None,
    start: int | None = None,
    end: int | None = None,
    as_of: int | None = None,
) -> dict[WindowKey, WindowRow]:
    """Window states recomputed from the raw log (not retracted as known at `as_of`)."""
    events = facts(conn).events(
        sequence.current(conn) if as_of is None else as_of,
        customer=customer,
        event_types=[meter.event_type],
        lo=start,
        hi=end,
    )
    return fold({meter.event_type: [meter]}, events)
