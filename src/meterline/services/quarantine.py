"""Quarantine: rejected inputs kept byte for byte, listed and replayed after a fix.

Shared by `meterline quarantine list|replay` and `GET /v1/quarantine`. A row
is never changed or removed (reconciliation counts it against the batch that
rejected it). Replaying re-validates the kept bytes as known now: a still-bad
input is reported and not quarantined again; a good one is ingested like any
event (so replaying twice stores nothing twice). Whether a row's event is now
stored is derived from the event log, so no replay bookkeeping is needed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Connection

from meterline.domain.events import DEFAULT_SOURCE, Event, validate_bytes
from meterline.domain.timestamps import format_us
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions, Ingestor
from meterline.store.database import Store
from meterline.store.schema import quarantine


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def read_page(store: Store, after: int, limit: int) -> dict[str, Any]:
    """One page of quarantined inputs with id > after, oldest first."""
    q = quarantine.c
    query = select(quarantine).where(q.id > after).order_by(q.id).limit(limit + 1)
    with store.read() as conn:
        rows = conn.execute(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": int(r.id),
            "batch_id": int(r.batch_id),
            "position": int(r.position),
            "source": r.source,
            "code": r.code,
            "message": r.message,
            "raw": _text(bytes(r.raw)),
            "raw_base64": base64.b64encode(bytes(r.raw)).decode("ascii"),
            "received_at": format_us(int(r.received_at)),
        }
        for r in rows
    ]
    return {"items": items, "next_after": items[-1]["id"] if more else None}


def _stored(conn: Connection, event: Event) -> bool:
    row = conn.execute(
        text("SELECT 1 FROM events WHERE source = :s AND event_id = :e LIMIT 1"),
        {"s": event.source, "e": event.event_id},
    ).first()
    return row is not None


@dataclass
class ReplayOutcome:
    id: int
    outcome: str  # stored | duplicate | rejected | not_found
    code: str | None = None
    message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "outcome": self.outcome, "code": self.code, "message": self.message}


@dataclass
class ReplayReport:
    outcomes: list[ReplayOutcome] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o.outcome == outcome)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stored": self.count("stored"),
            "duplicates": self.count("duplicate"),
            "rejected": self.count("rejected"),
            "not_found": self.count("not_found"),
            "items": [o.to_dict() for o in self.outcomes],
        }


def replay(
    store: Store, ingestor: Ingestor, ids: list[int] | None, now_us: int, backfill: bool = False
) -> ReplayReport:
    """Re-ingest quarantined inputs (all when `ids` is None) as known now."""
    with store.read() as conn:
        query = select(quarantine).order_by(quarantine.c.id)
        if ids is not None:
            query = query.where(quarantine.c.id.in_(ids))
        rows = conn.execute(query).all()
    report = ReplayReport()
    found = {int(r.id) for r in rows}
    for missing in sorted(set(ids or []) - found):
        report.outcomes.append(
            ReplayOutcome(missing, "not_found", "INVALID_ARGUMENT", "no such quarantine entry")
        )
    for r in rows:
        raw = bytes(r.raw)
        source = r.source or DEFAULT_SOURCE
        checked = validate_bytes(raw, now_us=now_us, default_source=source, backfill=backfill)
        if not isinstance(checked, Event):
            report.outcomes.append(
                ReplayOutcome(int(r.id), "rejected", str(checked.code), checked.message)
            )
            continue
        options = IngestOptions(source=source, backfill=backfill, origin="replay")
        result = ingestor.ingest([Item(raw, 0)], options)
        if result.accepted:
            report.outcomes.append(ReplayOutcome(int(r.id), "stored"))
        elif result.duplicates:
            report.outcomes.append(ReplayOutcome(int(r.id), "duplicate"))
        else:
            reject = result.rejects[0]
            report.outcomes.append(
                ReplayOutcome(int(r.id), "rejected", reject.code, reject.message)
            )
    return report


def stored_now(store: Store, items: list[dict[str, Any]], now_us: int) -> dict[int, bool]:
    """For listed rows: is the event they carry stored now (replayed or resent)?"""
    out: dict[int, bool] = {}
    with store.read() as conn:
        for item in items:
            raw = base64.b64decode(item["raw_base64"])
            event = validate_bytes(
                raw, now_us=now_us, default_source=item["source"] or DEFAULT_SOURCE, backfill=True
            )
            out[item["id"]] = isinstance(event, Event) and _stored(conn, event)
    return out
