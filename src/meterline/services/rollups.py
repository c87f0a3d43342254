"""Month rollup passes of the usage index (DESIGN §4: rollups keep a period's read
proportional to its length and groups, not to its events or ingest batches).

Ingest appends a day-rollup row per bucket and batch, so a busy month holds
hundreds of rows per customer. A pass folds each UTC month's day rows, as known
at the current seq S, into ``cpt`` rows of its units (the month, its 8-day and
2-day blocks) per (customer, meter, group); reads as known at K >= S start
from them. Only the (customer, month) pairs facts touched since the last pass
are folded, each forward from its own previous pass. The fold is computed in a read transaction
(rows <= S never change) and written in a short write transaction that takes
no seq: a pass is derived data, not a fact, so it never blocks ingest for the
length of the fold. Run it on a schedule (daily, or before an invoice run);
a stale or missing pass only makes reads longer, never different.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from meterline.domain.errors import ErrorCode, MeterlineError
from meterline.domain.timestamps import format_us, from_datetime
from meterline.store import audit, sequence, usage_rollups
from meterline.store.database import Store


def parse_month(label: str) -> int:
    """``YYYY-MM`` -> the start of that UTC month (us)."""
    try:
        year, month = (int(x) for x in label.split("-"))
        return from_datetime(datetime(year, month, 1, tzinfo=UTC))
    except (ValueError, TypeError) as exc:
        raise MeterlineError(ErrorCode.INVALID_ARGUMENT, f"month {label!r} is not YYYY-MM") from exc


def roll_up(store: Store, now_us: int, months: Sequence[str] | None = None) -> dict[str, Any]:
    """One rollup pass per month (by default, every month changed since the last
    pass) as known now; returns what was written."""
    starts = None if months is None else [parse_month(m) for m in months]
    with store.read() as conn:
        seq = sequence.current(conn)
        computed = usage_rollups.compute(conn, seq, starts)
    passes: list[usage_rollups.RollupPass] = []
    if computed:
        with store.write() as conn:
            passes = usage_rollups.record(conn, computed)
            for p in passes:
                audit.record(conn, "index.rollup", _report(p), now_us)
    return {"seq": seq, "passes": [_report(p) for p in passes]}


def _report(p: usage_rollups.RollupPass) -> dict[str, Any]:
    return {
        "month": format_us(p.month)[:7],
        "seq": p.seq,
        "customers": p.customers,
        "rows_written": p.rows,
        "rows_folded": p.folded,
    }
