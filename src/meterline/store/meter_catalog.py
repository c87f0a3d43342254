"""Meters as stored facts, cached per process and refreshed when they change."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from meterline.domain.events import decode_json
from meterline.metering import Meter, parse_meters


def load_meters(conn: Connection, known_at: int | None = None) -> list[Meter]:
    if known_at is None:
        rows = conn.execute(text("SELECT definition FROM meters ORDER BY seq")).all()
    else:
        rows = conn.execute(
            text("SELECT definition FROM meters WHERE seq <= :k ORDER BY seq"), {"k": known_at}
        ).all()
    return parse_meters([decode_json(r[0]) for r in rows])


def stored_definitions(conn: Connection) -> dict[str, tuple[str, dict[str, Any]]]:
    """code -> (content_hash, definition) of every stored meter."""
    rows = conn.execute(text("SELECT code, content_hash, definition FROM meters")).all()
    return {str(r[0]): (str(r[1]), decode_json(r[2])) for r in rows}


class MeterCatalog:
    """The meters in force, indexed by event type. Reloaded only when the
    greatest meter seq changes, so the hot ingest path pays one tiny query."""

    def __init__(self) -> None:
        self._version = -1
        self.by_type: dict[str, list[Meter]] = {}
        self.by_code: dict[str, Meter] = {}

    def refresh(self, conn: Connection) -> None:
        version = int(conn.execute(text("SELECT COALESCE(MAX(seq), 0) FROM meters")).scalar_one())
        if version == self._version:
            return
        meters = load_meters(conn)
        by_type: dict[str, list[Meter]] = defaultdict(list)
        for m in meters:
            by_type[m.event_type].append(m)
        self.by_type = dict(by_type)
        self.by_code = {m.code: m for m in meters}
        self._version = version
