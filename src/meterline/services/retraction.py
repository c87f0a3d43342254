"""Retracting an event: the log fact, the window index and the re-rating mark,
in one transaction."""

from __future__ import annotations

from meterline.store import audit
from meterline.store.database import Store
from meterline.store.event_log import Retraction, retract
from meterline.wiring import window_index


def retract_event(store: Store, source: str, event_id: str, reason: str, now_us: int) -> Retraction:
    index = window_index()
    with store.write() as conn:
        r = retract(conn, source, event_id, reason, now_us)
        index.on_retract(conn, r, now_us)
        audit.retraction(conn, r, now_us)
    return r
