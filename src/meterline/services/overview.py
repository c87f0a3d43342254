"""Ingestion health, read side: what an operator checks first (DESIGN §15 overview).

Counts of accepted, duplicate and rejected events per receiving-time bucket
(from the per-batch counters, never by scanning events), per-source
watermarks, late arrivals and the quarantine. Read-only; cheap on a large store
because every query reads a small table or an aggregate of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.timestamps import format_us
from meterline.store.window_index import current_watermark, load_sources


@dataclass(frozen=True)
class Bucket:
    start_us: int
    accepted: int
    duplicates: int
    rejected: int


def ingest_buckets(conn: Connection, lo_us: int, hi_us: int, bucket_us: int) -> list[Bucket]:
    """Per-bucket sums of the batch counters for batches received in [lo, hi)."""
    rows = conn.execute(
        text(
            "SELECT (received_at - :lo) / :b AS k, SUM(accepted), SUM(duplicates), SUM(rejected) "
            "FROM ingest_batches WHERE received_at >= :lo AND received_at < :hi "
            "GROUP BY (received_at - :lo) / :b"
        ),
        {"lo": lo_us, "hi": hi_us, "b": bucket_us},
    ).all()
    by_key = {int(r[0]): r for r in rows}
    out = []
    for k in range((hi_us - lo_us + bucket_us - 1) // bucket_us):
        r = by_key.get(k)
        out.append(
            Bucket(
                lo_us + k * bucket_us,
                int(r[1] or 0) if r else 0,
                int(r[2] or 0) if r else 0,
                int(r[3] or 0) if r else 0,
            )
        )
    return out


def ingest_totals(conn: Connection) -> dict[str, int]:
    row = conn.execute(
        text(
            "SELECT COUNT(*), SUM(accepted), SUM(duplicates), SUM(rejected), MAX(received_at) "
            "FROM ingest_batches"
        )
    ).one()
    return {
        "batches": int(row[0] or 0),
        "accepted": int(row[1] or 0),
        "duplicates": int(row[2] or 0),
        "rejected": int(row[3] or 0),
        "last_received": int(row[4]) if row[4] is not None else 0,
    }


def watermarks(conn: Connection, now_us: int) -> dict[str, Any]:
    """The global watermark and each source's, with when the source last sent."""
    sources = load_sources(conn)
    wm = current_watermark(conn, now_us)
    return {
        "global": None if wm is None else format_us(wm),
        "global_us": wm,
        "sources": [
            {
                "source": name,
                "watermark": format_us(state.watermark_us),
                "last_received": format_us(state.last_received_us),
            }
            for name, state in sorted(sources.items())
        ],
    }


def late_arrivals(conn: Connection, limit: int = 10) -> dict[str, Any]:
    count = int(conn.execute(text("SELECT COUNT(*) FROM late_arrivals")).scalar_one())
    rows = conn.execute(
        text(
            "SELECT source, event_id, meter_code, customer_id, window_start, late_by_us, "
            "received_at FROM late_arrivals ORDER BY id DESC LIMIT :n"
        ),
        {"n": limit},
    ).all()
    return {
        "count": count,
        "recent": [
            {
                "source": r[0],
                "event_id": r[1],
                "meter": r[2],
                "customer_id": r[3],
                "window_start": format_us(int(r[4])),
                "late_by_s": int(r[5]) // 1_000_000,
                "received_at": format_us(int(r[6])),
            }
            for r in rows
        ],
    }


def quarantine_count(conn: Connection) -> int:
    return int(conn.execute(text("SELECT COUNT(*) FROM quarantine")).scalar_one())


def quarantine_entry(conn: Connection, entry_id: int) -> dict[str, Any] | None:
    """One quarantined input by id (the list endpoint pages; fixing needs one)."""
    r = conn.execute(
        text(
            "SELECT id, batch_id, position, source, code, message, raw, received_at "
            "FROM quarantine WHERE id = :i"
        ),
        {"i": entry_id},
    ).first()
    if r is None:
        return None
    return {
        "id": int(r[0]),
        "batch_id": int(r[1]),
        "position": int(r[2]),
        "source": r[3],
        "code": r[4],
        "message": r[5],
        "raw": bytes(r[6]),
        "received_at": format_us(int(r[7])),
    }
