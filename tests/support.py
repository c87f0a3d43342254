"""Helpers for building events and ingesting them in tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from meterline.domain.clock import Clock
from meterline.ingest.readers import Item
from meterline.ingest.service import IngestOptions, IngestReport
from meterline.store.database import Store
from meterline.wiring import ingestor_for


def event(
    event_id: str,
    *,
    customer: str = "acme",
    type_: str = "api_call",
    time: str = "2024-02-01T10:00:00Z",
    props: dict[str, Any] | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": event_id,
        "customer_id": customer,
        "event_type": type_,
        "event_time": time,
    }
    if props is not None:
        e["properties"] = props
    if source is not None:
        e["source"] = source
    return e


_encoder = msgspec.json.Encoder(decimal_format="number")


def line(e: dict[str, Any] | str) -> bytes:
    """One NDJSON line; Decimals go out as JSON numbers, as a producer would send."""
    return e.encode() if isinstance(e, str) else _encoder.encode(e)


def ingest(
    store: Store,
    clock: Clock,
    events: Iterable[dict[str, Any] | str],
    *,
    batch_size: int = 1000,
    backfill: bool = False,
    source: str = "default",
) -> IngestReport:
    items = [Item(line(e), i + 1) for i, e in enumerate(events)]
    options = IngestOptions(source=source, backfill=backfill, origin="test", batch_size=batch_size)
    return ingestor_for(store, clock).ingest(items, options)


def stored(store: Store) -> list[tuple[int, str, str, str]]:
    """(seq, source, event_id, content_hash) of every stored event, by seq."""
    from sqlalchemy import text

    with store.read() as conn:
        rows = conn.execute(
            text("SELECT seq, source, event_id, content_hash FROM events ORDER BY seq")
        ).all()
    return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]
